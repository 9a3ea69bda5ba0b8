// The shared command-line plumbing: every flk tool parses options, loads the
// configuration, reports and exits the same way (DESIGN.md §8).
//
//   int main(int argc, char** argv) {
//     flk::cli::Tool tool("flk-wal", "write, read, list, verify and seal the inbox WAL");
//     auto* sub = tool.app().add_subcommand("ls", "list segments");
//     …
//     return tool.run(argc, argv, [&] { … return 0; });
//   }
//
// run() turns a thrown flk::Error into "flk-wal: error: <message>" on stderr and its
// exit code; usage errors exit 64, --help and --version exit 0, anything else 70.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "flk/config/config.hpp"

namespace flk::cli {

class Tool {
 public:
  Tool(std::string name, std::string description);

  CLI::App& app() { return app_; }
  const std::string& name() const { return name_; }

  // -v (repeatable) raises, -q lowers; 0 is the default.
  int verbosity() const { return verbose_ - quiet_; }

  // The configuration named by --config, $FLK_CONFIG or the default path (loaded once).
  const config::Config& config();

  // Diagnostics on stderr: info only with -v, warnings unless -q, notices always
  // (for what an operator must not miss even with -q, such as data cut on recovery).
  void info(const std::string& message) const;
  void warn(const std::string& message) const;
  void notice(const std::string& message) const;

  int run(int argc, char** argv, const std::function<int()>& body);

 private:
  std::string name_;
  CLI::App app_;
  std::optional<std::string> config_path_;
  int verbose_ = 0;
  int quiet_ = 0;
  std::optional<config::Config> config_;
};

// Graceful stop for long-running tools: blocks SIGINT and SIGTERM in the calling thread
// (and so in every thread it starts afterwards — call it before starting any) and runs
// fn on a thread of its own when one arrives. A second signal exits at once (status
// 128 + signal). SIGPIPE is ignored, so that a closed stdout is a write error.
void on_stop_signal(std::function<void(int)> fn);

// Validators for CLI11 options that name values flk parses.
CLI::Validator duration_validator();
CLI::Validator size_validator();
CLI::Validator region_validator();

}  // namespace flk::cli
