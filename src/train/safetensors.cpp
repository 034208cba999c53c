#include "train/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace tb {

// Tensors are read and written as they lie in memory: little-endian, as the format says.
static_assert(std::endian::native == std::endian::little, "safetensors are little-endian");

// The reference implementation's limit: a larger header is taken for a damaged length.
static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

static constexpr struct {
  StDtype dtype;
  const char* name;
  size_t size;
} kDtypes[] = {
    {StDtype::BOOL, "BOOL", 1},       {StDtype::U8, "U8", 1},           {StDtype::I8, "I8", 1},
    {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E5M2, "F8_E5M2", 1}, {StDtype::I16, "I16", 2},
    {StDtype::U16, "U16", 2},         {StDtype::F16, "F16", 2},         {StDtype::BF16, "BF16", 2},
    {StDtype::I32, "I32", 4},         {StDtype::U32, "U32", 4},         {StDtype::F32, "F32", 4},
    {StDtype::I64, "I64", 8},         {StDtype::U64, "U64", 8},         {StDtype::F64, "F64", 8},
};

const char* st_dtype_name(StDtype t) {
  for (const auto& d : kDtypes)
    if (d.dtype == t) return d.name;
  return "?";
}

size_t st_dtype_size(StDtype t) {
  for (const auto& d : kDtypes)
    if (d.dtype == t) return d.size;
  return 0;
}

int64_t SafeTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // the reader has checked that it fits
  return n;
}

std::string printable_name(std::string_view name) {
  std::string s;
  for (unsigned char c : name.substr(0, 80))
    s += c < 0x20 || c == 0x7f ? fmt::format("\\x{:02x}", c) : std::string(1, char(c));
  if (name.size() > 80) s += "...";
  return s;
}

SafeTensorsReader::SafeTensorsReader(const std::string& path) : what_(path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("{}: {}", path, std::filesystem::exists(path, ec) ? "not a regular file" : "not found");
  file_.open(path, std::ios::binary);
  if (!file_) fail("{}: cannot open ({})", path, std::strerror(errno));
  size_ = std::filesystem::file_size(path, ec);
  if (ec) fail("{}: cannot read its size ({})", path, ec.message());
  parse_header();
}

SafeTensorsReader::SafeTensorsReader(std::string_view bytes, std::string what)
    : what_(std::move(what)), bytes_(bytes), size_(bytes.size()) {
  parse_header();
}

const SafeTensorInfo* SafeTensorsReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void SafeTensorsReader::read(const SafeTensorInfo& t, void* dst) {
  read_at(data_start_ + t.begin, dst, size_t(t.end - t.begin), t.name.c_str());
}

void SafeTensorsReader::read_at(uint64_t offset, void* dst, size_t bytes, const char* what) {
  if (bytes == 0) return;
  if (offset > size_ || bytes > size_ - offset)  // the header's checks rule this out
    fail("{}: truncated (in {})", what_, printable_name(what));
  if (file_.is_open()) {
    file_.seekg(std::streamoff(offset));
    file_.read(static_cast<char*>(dst), std::streamsize(bytes));
    if (size_t(file_.gcount()) != bytes)  // shortened since it was opened
      fail("{}: truncated (in {})", what_, printable_name(what));
  } else {
    std::memcpy(dst, bytes_.data() + offset, bytes);
  }
}

void SafeTensorsReader::parse_header() {
  if (size_ < 8)
    fail("{}: not a safetensors file ({} bytes, shorter than the header length)", what_, size_);
  uint64_t header_bytes = 0;
  read_at(0, &header_bytes, 8, "the header length");
  if (header_bytes > kMaxHeaderBytes)
    fail("{}: corrupt (a header of {} bytes; at most {})", what_, header_bytes, kMaxHeaderBytes);
  if (header_bytes > size_ - 8)
    fail("{}: truncated (a header of {} bytes, {} in the file after its length)", what_,
         header_bytes, size_ - 8);
  std::string text(header_bytes, '\0');
  read_at(8, text.data(), text.size(), "the header");
  data_start_ = 8 + header_bytes;

  // Parsed with a callback: a name given twice is ambiguous (nlohmann keeps the last), and
  // nothing deeper than a shape's numbers is built.
  std::set<std::string> seen;
  std::string twice;
  bool too_deep = false;
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int depth, Event event, nlohmann::json& parsed) {
    if (event == Event::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second &&
        twice.empty())
      twice = parsed.get<std::string>();
    if ((event == Event::object_start || event == Event::array_start) && depth >= 3) {
      too_deep = true;
      return false;
    }
    return true;
  };
  const nlohmann::json header = nlohmann::json::parse(text, callback, false);
  if (header.is_discarded() || !header.is_object())
    fail("{}: corrupt header (not a JSON object)", what_);
  if (!twice.empty()) fail("{}: corrupt header ('{}' given twice)", what_, printable_name(twice));
  if (too_deep) fail("{}: corrupt header (nested deeper than the format's)", what_);

  auto bad = [&](const std::string& key, const char* why) {
    fail("{}: corrupt header ('{}': {})", what_, printable_name(key), why);
  };
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) bad(key, "not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) bad(key, "a value that is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || value.size() != 3 || !value.contains("dtype") ||
        !value.contains("shape") || !value.contains("data_offsets"))
      bad(key, "not an object of dtype, shape and data_offsets");
    SafeTensorInfo t;
    t.name = key;
    const nlohmann::json& dtype = value["dtype"];
    const auto* known = std::find_if(std::begin(kDtypes), std::end(kDtypes), [&](const auto& d) {
      return dtype.is_string() && dtype.get<std::string>() == d.name;
    });
    if (known == std::end(kDtypes)) bad(key, "unknown dtype");
    t.dtype = known->dtype;
    const nlohmann::json& shape = value["shape"];
    if (!shape.is_array()) bad(key, "shape is not an array");
    uint64_t numel = 1;
    for (const nlohmann::json& d : shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX))
        bad(key, "shape holds something other than a size");
      if (__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel) || numel > uint64_t(INT64_MAX))
        bad(key, "shape too large");
      t.shape.push_back(d.get<int64_t>());
    }
    const nlohmann::json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      bad(key, "data_offsets is not two offsets");
    t.begin = offsets[0].get<uint64_t>(), t.end = offsets[1].get<uint64_t>();
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t(known->size), &bytes)) bad(key, "shape too large");
    if (t.end < t.begin || t.end - t.begin != bytes)
      fail("{}: corrupt header ('{}': data_offsets [{}, {}] for {} bytes of {} {})", what_,
           printable_name(key), t.begin, t.end, bytes, known->name, nlohmann::json(shape).dump());
    tensors_.push_back(std::move(t));
  }

  // The tensors must fill the data exactly, one after the other.
  std::sort(tensors_.begin(), tensors_.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_bytes = size_ - data_start_;
  uint64_t at = 0;
  for (const SafeTensorInfo& t : tensors_) {
    if (t.begin != at)
      fail(
          "{}: {} ('{}' starts at byte {} of the data, where {})", what_,
          t.begin > data_bytes ? "truncated" : "corrupt header", printable_name(t.name), t.begin,
          t.begin > at ? "bytes before it belong to no tensor" : "the tensor before it ends later");
    at = t.end;
    if (at > data_bytes)
      fail("{}: truncated ('{}' ends at byte {} of the data; the file holds {})", what_,
           printable_name(t.name), at, data_bytes);
  }
  if (at != data_bytes)
    fail("{}: corrupt ({} bytes after the last tensor's end)", what_, data_bytes - at);
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
}

static uint64_t tensor_bytes(const SafeTensorOut& t) {
  uint64_t bytes = st_dtype_size(t.dtype);
  for (int64_t d : t.shape) bytes *= uint64_t(d);
  return bytes;
}

static std::string header_text(const std::map<std::string, std::string>& metadata,
                               const std::vector<SafeTensorOut>& tensors) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t at = 0;
  for (const SafeTensorOut& t : tensors) {
    TB_CHECK(t.name != "__metadata__" && !h.contains(t.name),
             "safetensors: tensor name '{}' is reserved or given twice", t.name);
    const uint64_t bytes = tensor_bytes(t);
    h[t.name] = {
        {"dtype", st_dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text = h.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data 8-byte aligned, as the reference does
  return text;
}

std::string safetensors_bytes(const std::map<std::string, std::string>& metadata,
                              const std::vector<SafeTensorOut>& tensors) {
  const std::string header = header_text(metadata, tensors);
  const uint64_t header_bytes = header.size();
  std::string out(reinterpret_cast<const char*>(&header_bytes), 8);
  out += header;
  for (const SafeTensorOut& t : tensors)
    out.append(static_cast<const char*>(t.data), size_t(tensor_bytes(t)));
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                       const std::vector<SafeTensorOut>& tensors) {
  const std::string header = header_text(metadata, tensors);
  write_file_atomic(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    const uint64_t header_bytes = header.size();
    bool ok = write_all(fd, &header_bytes, 8) && write_all(fd, header.data(), header.size());
    for (const SafeTensorOut& t : tensors) ok = ok && write_all(fd, t.data, tensor_bytes(t));
    const int err = errno;
    if (::close(fd) != 0) ok = false;
    if (!ok) errno = err;
    return ok;
  });
}

}  // namespace tb
