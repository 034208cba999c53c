// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain: big-endian header of a
// magic (0x0000 0x08=u8, ndims) and ndims u32 sizes, then the bytes. Anything that does not match
// the header exactly is a tb::Error naming the file.
#pragma once
#include <string>

#include "data/dataset.h"

namespace tb {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// images_path: u8 IDX, 3 dims (count, rows, cols); labels_path: u8 IDX, 1 dim (count), each
// label < classes. Result: channels=1, source=images_path.
Dataset read_idx(const std::string& images_path, const std::string& labels_path,
                 const std::string& name, int classes);

// Reads the four Fashion-MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
// t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from dir; "" means kFashionMnistDir.
DatasetPair load_fashion_mnist(const std::string& dir = kFashionMnistDir);

// Writes d (channels must be 1) as two gzip'd IDX files, each through a temp file + rename.
void write_idx(const Dataset& d, const std::string& images_path, const std::string& labels_path);

}  // namespace tb
