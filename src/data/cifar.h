// CIFAR-10 in its two common layouts, on disk or inside a .tar.gz:
//   binary:       cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin; records of 3073 bytes:
//                 label (0..9), then 1024 R, 1024 G, 1024 B bytes (row-major 32x32)
//   image folder: root/train/<class>/*.jpg|*.jpeg|*.png, root/test/<class>/... (32x32 RGB)
// Images are kept as CHW planes, exactly the binary record layout.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace tb {

// CIFAR-10's label order (also the sorted order of the image-folder class names).
const std::vector<std::string>& cifar10_classes();

// Reads and concatenates binary batch files. A size that is not a positive multiple of 3073
// (a short record) or a label > 9 is a tb::Error naming the file.
Dataset read_cifar_batches(const std::vector<std::string>& files, const std::string& name);
// The same for one batch file's bytes (or an archive member's), appended to d; `what` names it.
void append_cifar_records(const uint8_t* data, size_t size, const std::string& what, Dataset& d);

// Reads root/train and root/test. classes empty: the class folders under train/, sorted by name
// (test/ must have the same ones); else exactly these folders, label = index in the list. Files
// that are hidden or not .jpg/.jpeg/.png are ignored; an empty class folder, an undecodable file,
// a grayscale image or one that is not 32x32 is a tb::Error naming the file. Decodes in parallel.
DatasetPair read_image_folder(const std::string& root, const std::vector<std::string>& classes,
                              const std::string& name);

// Where load_cifar10("") looks, in order: data/cifar10 (relative to the current directory), then
// $TRAINBENCH_DATA/cifar10 when TRAINBENCH_DATA is set.
std::vector<std::string> cifar10_default_paths();

// path: (a) a directory that holds cifar-10-batches-bin/ or is it, (b) an image-folder root (with
// train/ and test/), or a directory holding exactly one such root or one .tar.gz, (c) a .tar.gz
// (or .tar) of either layout, read in memory. "" tries cifar10_default_paths(). Result: name
// "cifar10", channels 3, 32x32, classes 10, labels in cifar10_classes() order.
DatasetPair load_cifar10(const std::string& path = "");

// Writes the binary layout into out_dir (created if needed): the train set split evenly into
// data_batch_1..5.bin, test_batch.bin and batches.meta.txt, each via a temp file + rename.
// Needs 3x32x32 images, labels < 10, at least 5 train and 1 test image.
void write_cifar_binary(const DatasetPair& d, const std::string& out_dir);

}  // namespace tb
