#include "flk/metrics/metrics.hpp"

#include <cmath>

#include <fmt/format.h>

#include "flk/util/fs.hpp"

namespace flk::metrics {

namespace {

void append_escaped(std::string& out, std::string_view v, bool quote_too) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && quote_too) out += "\\\"";
    else out += c;
  }
}

}  // namespace

void Text::family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += fmt::format("# HELP {} ", name);
  append_escaped(out_, help, false);
  out_ += fmt::format("\n# TYPE {} {}\n", name, type);
}

void Text::sample(std::string_view name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      append_escaped(out_, labels[i].second, true);
      out_ += '"';
    }
    out_ += '}';
  }
  if (std::isnan(value)) out_ += " NaN\n";
  else if (std::isinf(value)) out_ += value > 0 ? " +Inf\n" : " -Inf\n";
  else if (value == std::floor(value) && std::fabs(value) < 1e15) out_ += fmt::format(" {}\n", static_cast<int64_t>(value));
  else out_ += fmt::format(" {}\n", value);
}

void write_file(const std::filesystem::path& path, std::string_view text) { fs::write_file_atomic(path, text); }

}  // namespace flk::metrics
