// A model's weights as PyTorch holds them: a safetensors file of fp32 tensors under the names of
// state_dict() (models/torch_names.h), which torchvision's resnet50(num_classes=10) or the MLP's
// nn.Sequential loads with load_state_dict(strict=True); and back, from such a file (PyTorch's
// own included) to the parameters and batch-norm statistics an executor loads. Plus the test pass's
// logits, to compare a model with PyTorch's forward of the same weights.
#pragma once
#include <string>
#include <vector>

#include "models/model.h"
#include "train/checkpoint.h"
#include "train/executor.h"
#include "train/safetensors.h"

namespace tb {

// `evaluate` and `run --init` read a path that ends in ".safetensors" as one.
bool is_safetensors_path(const std::string& path);

// The model c was trained as: its workload's, on that workload's image size, with the classes
// its parameter count says (an image-folder data set may have other than 10). Throws Error when
// no such model has c's sizes.
Model checkpoint_model(const Checkpoint& c, const std::string& path);

// Writes c's parameters and batch-norm statistics (model m) to path; every num_batches_tracked
// is c's optimizer update count (one training forward each, as PyTorch counts them). The
// metadata says the workload, "format": "pt" and the trainbench version.
void export_safetensors(const Checkpoint& c, const Model& m, const std::string& path);

// The workload of r's weights: its metadata's "workload", else `wanted` (--workload, or the run's
// workload); Error where neither says one, or where the two differ.
std::string safetensors_workload(const SafeTensorsReader& r, const std::string& wanted);

// r's tensors for model m of `workload`, as a Checkpoint that load_model takes
// (parameters and statistics only; num_batches_tracked is not used). Throws Error naming the
// file and the first tensor that is missing, not the model's, of another dtype or shape, or
// that holds a non-finite value (or a negative running variance). Allocates only after every
// tensor's name, dtype and shape are the model's.
Checkpoint read_torch_weights(SafeTensorsReader& r, const Model& m, const std::string& workload);

// The logits of every image of ex's test set, in order: [test_count, classes], batch norm in eval
// mode (as PyTorch's model.eval()). Runs the test pass's forward again; ex.evaluate()'s figures
// are unaffected.
std::vector<float> test_logits(Executor& ex);
// test_logits(ex) as raw little-endian float32, written atomically.
void write_test_logits(Executor& ex, const std::string& path);

}  // namespace tb
