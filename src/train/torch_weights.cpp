#include "train/torch_weights.h"

#include <cmath>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "models/torch_names.h"
#include "ops/batch.h"

namespace tb {

bool is_safetensors_path(const std::string& path) {
  return path.ends_with(".safetensors");
}

Model checkpoint_model(const Checkpoint& c, const std::string& path) {
  const Workload& w = find_workload(c.workload);
  Dataset images;  // only its shape: the model's input and classes
  images.channels = w.name == "resnet50-cifar10" ? 3 : 1;
  images.height = images.width = w.name == "resnet50-cifar10" ? 32 : 28;
  auto model_with = [&](int classes) {
    images.classes = classes;
    return build_workload_model(w, images);
  };
  // Only the classifier's outputs depend on the classes: the count grows by a fixed step.
  const Model one = model_with(1);
  const int64_t step = model_with(2).param_count - one.param_count;
  const int64_t extra = c.param_count - one.param_count;
  if (extra >= 0 && extra % step == 0 && extra / step < 65536) {
    Model m = model_with(int(1 + extra / step));
    if (m.state_count == c.state_count) return m;
  }
  fail("checkpoint {}: {} parameters and {} statistics fit no {} model of {}x{}x{} images", path,
       c.param_count, c.state_count, w.name, images.channels, images.height, images.width);
}

void export_safetensors(const Checkpoint& c, const Model& m, const std::string& path) {
  TB_CHECK(int64_t(c.params.size()) == m.param_count && int64_t(c.state.size()) == m.state_count,
           "export: the checkpoint's arrays ({} parameters, {} statistics) are not the model's",
           c.params.size(), c.state.size());
  const int64_t updates = c.updates;
  std::vector<SafeTensorOut> tensors;
  for (const TorchTensor& t : torch_state_dict(m)) {
    SafeTensorOut o{t.name, StDtype::F32, t.shape, nullptr};
    if (t.slot == TorchTensor::Slot::params) o.data = c.params.data() + t.offset;
    if (t.slot == TorchTensor::Slot::state) o.data = c.state.data() + t.offset;
    if (t.slot == TorchTensor::Slot::updates) o.dtype = StDtype::I64, o.data = &updates;
    tensors.push_back(std::move(o));
  }
  write_safetensors(
      path,
      {{"format", "pt"}, {"workload", c.workload}, {"trainbench_version", TRAINBENCH_VERSION}},
      tensors);
}

std::string safetensors_workload(const SafeTensorsReader& r, const std::string& wanted) {
  auto it = r.metadata().find("workload");
  if (it == r.metadata().end()) {
    if (!wanted.empty()) return wanted;
    std::string known;
    for (const Workload& w : workloads()) known += (known.empty() ? "" : " | ") + w.name;
    fail("{}: its metadata names no workload; say which with --workload {}", r.what(), known);
  }
  const std::string& named = it->second;
  bool exists = false;
  for (const Workload& w : workloads()) exists = exists || w.name == named;
  TB_CHECK(exists, "{}: its metadata names workload '{}', which this trainbench does not have",
           r.what(), printable_name(named));
  TB_CHECK(wanted.empty() || wanted == named, "{}: holds weights of {}, not {}", r.what(), named,
           wanted);
  return named;
}

Checkpoint read_torch_weights(SafeTensorsReader& r, const Model& m, const std::string& workload) {
  using Slot = TorchTensor::Slot;
  const std::vector<TorchTensor> want = torch_state_dict(m);
  // Names first: a file of another model shows in its first foreign or missing name.
  std::set<std::string> names;
  for (const TorchTensor& t : want) names.insert(t.name);
  int64_t foreign = 0, missing = 0;
  const SafeTensorInfo* first_foreign = nullptr;
  const TorchTensor* first_missing = nullptr;
  for (const SafeTensorInfo& t : r.tensors())
    if (!names.count(t.name) && foreign++ == 0) first_foreign = &t;
  for (const TorchTensor& t : want)
    if (!r.find(t.name) && missing++ == 0) first_missing = &t;
  if (first_foreign)
    fail("{}: tensor '{}' is not in {}'s model ({} such tensor{}; {} of the model's missing)",
         r.what(), printable_name(first_foreign->name), workload, foreign, foreign > 1 ? "s" : "",
         missing);
  if (first_missing)
    fail("{}: tensor '{}' missing ({} of the model's {} missing)", r.what(), first_missing->name,
         missing, want.size());
  for (const TorchTensor& t : want) {
    const SafeTensorInfo& f = *r.find(t.name);
    const StDtype dtype = t.slot == Slot::updates ? StDtype::I64 : StDtype::F32;
    if (f.dtype != dtype)
      fail("{}: tensor '{}' is {}; the model's is {}", r.what(), t.name, st_dtype_name(f.dtype),
           st_dtype_name(dtype));
    if (f.shape != t.shape)
      fail("{}: tensor '{}' has shape {}; the model's is {}", r.what(), t.name, shape_str(f.shape),
           shape_str(t.shape));
  }

  Checkpoint c;
  c.workload = workload;
  c.hyper = nlohmann::json::object();
  c.device = "safetensors";
  c.param_count = m.param_count, c.state_count = m.state_count;
  c.params.resize(size_t(m.param_count));
  c.state.resize(size_t(m.state_count));
  for (const TorchTensor& t : want) {
    if (t.slot == Slot::updates) continue;  // PyTorch's count of training forwards: not used
    float* dst = (t.slot == Slot::params ? c.params.data() : c.state.data()) + t.offset;
    r.read(*r.find(t.name), dst);
    const bool variance = t.name.ends_with(".running_var");
    for (int64_t i = 0; i < t.count(); ++i)
      if (!std::isfinite(dst[i]) || (variance && dst[i] < 0))
        fail("{}: tensor '{}' holds {} at index {} ({})", r.what(), t.name, dst[i], i,
             std::isfinite(dst[i]) ? "a negative variance" : "not a finite number");
  }
  return c;
}

std::vector<float> test_logits(Executor& ex) {
  const int64_t classes = ex.model().classes, count = ex.test_count(), batch = ex.max_batch();
  const Backend& be = ex.backend();
  std::vector<float> all(size_t(count * classes));
  ex.start_test_pass();  // the test set in order, as evaluate() runs it
  for (int64_t first = 0; first < count; first += batch) {
    const int64_t n = std::min(batch, count - first);
    ex.test_batch(n);
    be.download(be.ctx, all.data() + first * classes, ex.buffers().out.back(),
                size_t(n * classes) * sizeof(float));
  }
  return all;
}

void write_test_logits(Executor& ex, const std::string& path) {
  const std::vector<float> logits = test_logits(ex);
  write_text_atomic(path, std::string(reinterpret_cast<const char*>(logits.data()),
                                      logits.size() * sizeof(float)));
}

}  // namespace tb
