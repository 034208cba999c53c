#include "train/workload.h"

#include "core/error.h"
#include "data/cifar.h"
#include "data/idx.h"

namespace tb {

nlohmann::json hyper_json(const Hyper& h) {
  nlohmann::json j = {{"workload", h.workload},   {"epochs", h.epochs},
                      {"batch", h.batch},         {"steps", h.steps},
                      {"optimizer", h.optimizer}, {"seed", h.seed},
                      {"augment", h.augment},     {"precision", precision_name(h.precision)},
                      {"threads", h.threads},     {"data", h.data}};
  if (h.optimizer == "adam")
    j["adam"] = {{"lr", h.adam.lr},
                 {"beta1", h.adam.beta1},
                 {"beta2", h.adam.beta2},
                 {"eps", h.adam.eps},
                 {"weight_decay", h.adam.weight_decay}};
  else
    j["sgd"] = {{"lr", h.sgd.lr},
                {"momentum", h.sgd.momentum},
                {"nesterov", h.sgd.nesterov},
                {"weight_decay", h.sgd.weight_decay}};
  return j;
}

static std::vector<Workload> make_workloads() {
  std::vector<Workload> all;
  {
    Workload w;
    w.name = "fashion-mlp";
    w.description = "Fashion-MNIST, flatten 784 -> dense 128 -> ReLU -> dense 10, Adam, batch 32";
    w.defaults.workload = w.name;
    w.defaults.epochs = 10;
    w.defaults.batch = 32;
    w.expected_test_accuracy = 0.88;
    all.push_back(w);
  }
  {
    Workload w;
    w.name = "resnet50-cifar10";
    w.description = "CIFAR-10 32x32, torchvision ResNet-50 v1.5 (10 classes), Adam, batch 128";
    w.defaults.workload = w.name;
    w.defaults.epochs = 10;
    w.defaults.batch = 128;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    for (int c = 0; c < 3; ++c) w.mean[c] = mean[c], w.std[c] = std[c];
    w.expected_test_accuracy = 0;  // not stated by the contract for 10 epochs
    all.push_back(w);
  }
  return all;
}

const std::vector<Workload>& workloads() {
  static const std::vector<Workload> all = make_workloads();  // immutable after first use
  return all;
}

const Workload& find_workload(const std::string& name) {
  std::string known;
  for (const Workload& w : workloads()) {
    if (w.name == name) return w;
    known += (known.empty() ? "" : ", ") + w.name;
  }
  fail("unknown workload '{}' (known: {})", name, known);
}

Model build_workload_model(const Workload& w, const Dataset& train) {
  if (w.name == "fashion-mlp")
    return build_mlp(train.channels, train.height, train.width, {128}, train.classes);
  if (w.name == "resnet50-cifar10")
    return build_resnet50(train.classes, train.channels, train.height, train.width);
  fail("workload '{}' has no model builder", w.name);
}

DatasetPair load_workload_data(const Workload& w, const std::string& path) {
  if (w.name == "fashion-mlp")
    return load_fashion_mnist(path.empty() ? "/usr/share/datasets/fashion-mnist" : path);
  if (w.name == "resnet50-cifar10") return load_cifar10(path);
  fail("workload '{}' has no data loader", w.name);
}

}  // namespace tb
