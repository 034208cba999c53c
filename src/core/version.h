// The build's git revision ("c378de8", or "unknown" outside a clone). It lives in one file that
// CMake generates (cmake/git_revision.cpp.in), not in a compile definition, so a new commit
// recompiles that file alone instead of the whole engine.
#pragma once

namespace tb {
const char* git_revision();
}  // namespace tb
