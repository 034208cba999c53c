// safetensors, the tensor file PyTorch users exchange weights in (Hugging Face's format): an
// 8-byte little-endian header length N, N bytes of JSON, then every tensor's bytes back to back.
// The JSON maps each tensor's name to {"dtype": "F32", "shape": [...], "data_offsets": [begin,
// end]} (offsets into the bytes after the header) and "__metadata__" to a map of strings.
//
// The reader checks the whole header before it reads or allocates anything a file declares: the
// header length against the file's size, every tensor's offsets against its shape and dtype, and
// that the tensors fill the data exactly, without holes or overlaps (as the reference
// implementation does). So a damaged file is refused in one line, whatever sizes it claims.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tb {

enum class StDtype : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E4M3,
  F8_E5M2,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  I64,
  U64,
  F64
};
const char* st_dtype_name(StDtype t);
size_t st_dtype_size(StDtype t);

struct SafeTensorInfo {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;   // [] for a scalar
  uint64_t begin = 0, end = 0;  // its bytes, counted from the end of the header
  int64_t numel() const;
};

// A file (or bytes in memory) opened: the header read and checked; the tensors' bytes are read
// when asked for, into the caller's memory.
class SafeTensorsReader {
 public:
  // Throws Error naming path: cannot open, not a safetensors file, truncated, corrupt header.
  explicit SafeTensorsReader(const std::string& path);
  // The same checks on bytes in memory (the fuzz target, tests); `what` names them in errors.
  // The bytes must outlive the reader.
  SafeTensorsReader(std::string_view bytes, std::string what);

  const std::string& what() const { return what_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }  // in the data's order
  const SafeTensorInfo* find(const std::string& name) const;
  // Copies t's end - begin bytes to dst.
  void read(const SafeTensorInfo& t, void* dst);

 private:
  std::string what_;
  std::string_view bytes_;  // the bytes constructor's
  std::ifstream file_;      // the path constructor's
  uint64_t size_ = 0;       // of the whole file
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafeTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;

  void read_at(uint64_t offset, void* dst, size_t bytes, const char* what);
  void parse_header();
};

// One tensor to write: its bytes are numel * dtype size at data, little-endian.
struct SafeTensorOut {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// The whole file in memory (tests, the fuzz corpus); tensors are laid out in the given order.
std::string safetensors_bytes(const std::map<std::string, std::string>& metadata,
                              const std::vector<SafeTensorOut>& tensors);
// Written atomically (temp file, fsync, rename); throws Error naming path.
void write_safetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::vector<SafeTensorOut>& tensors);

// A name as an error message may quote it: control characters escaped, at most 80 characters.
std::string printable_name(std::string_view name);

}  // namespace tb
