// Prometheus text exposition (DESIGN.md §6): built by the tools, written atomically
// for node_exporter's textfile collector (--metrics-file) or served by flk-serve.
//
//   metrics::Text m;
//   m.family("flk_crr_shipped_segments_total", "counter", "Segments a target acknowledged.");
//   m.sample("flk_crr_shipped_segments_total", {{"source", "us-east-1"}, {"target", "us-west-2"}}, 42);
//   metrics::write_file(path, m.str());
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flk::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Text {
 public:
  // Declares a family (once; samples must follow their family's declaration).
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, double value);
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

// Writes the text atomically (temp → fsync → rename → fsync dir).
void write_file(const std::filesystem::path& path, std::string_view text);

}  // namespace flk::metrics
