#include "flk/cli/cli.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/time.hpp"

namespace flk::cli {

Tool::Tool(std::string name, std::string description) : name_(std::move(name)), app_(std::move(description), name_) {
  app_.set_version_flag("--version", fmt::format("{} (flk) {}", name_, FLK_VERSION));
  app_.add_option("--config", config_path_, "configuration file (default: $FLK_CONFIG, /etc/flk/flk.yaml)")
      ->type_name("FILE");
  app_.add_flag("-v,--verbose", verbose_, "say more on stderr (repeatable)");
  app_.add_flag("-q,--quiet", quiet_, "say only errors on stderr");
  app_.fallthrough();
  app_.get_formatter()->column_width(32);
}

const config::Config& Tool::config() {
  if (!config_) config_ = config::load(config_path_);
  return *config_;
}

void Tool::info(const std::string& message) const {
  if (verbosity() >= 1) std::cerr << name_ << ": " << message << '\n';
}

void Tool::warn(const std::string& message) const {
  if (verbosity() >= 0) std::cerr << name_ << ": " << message << '\n';
}

void Tool::notice(const std::string& message) const { std::cerr << name_ << ": " << message << '\n'; }

int Tool::run(int argc, char** argv, const std::function<int()>& body) {
  try {
    try {
      app_.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      std::cout << app_.help();
      return 0;
    } catch (const CLI::CallForAllHelp&) {
      std::cout << app_.help("", CLI::AppFormatMode::All);
      return 0;
    } catch (const CLI::CallForVersion&) {
      std::cout << app_.version() << '\n';
      return 0;
    } catch (const CLI::ParseError& e) {
      std::string msg = e.what();
      // CLI11 messages start with a capital and sometimes end with a full stop.
      if (!msg.empty()) msg[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(msg[0])));
      while (!msg.empty() && (msg.back() == '.' || msg.back() == '\n')) msg.pop_back();
      std::cerr << name_ << ": error: " << msg << "\n" << "Try '" << name_ << " --help' for more information.\n";
      return static_cast<int>(Code::usage);
    }
    return body();
  } catch (const Error& e) {
    std::cout.flush();
    std::cerr << name_ << ": error: " << e.what() << '\n';
    return e.exit_status();
  } catch (const std::bad_alloc&) {
    std::cerr << name_ << ": error: out of memory\n";
    return static_cast<int>(Code::internal);
  } catch (const std::exception& e) {
    std::cerr << name_ << ": error: internal error: " << e.what() << '\n';
    return static_cast<int>(Code::internal);
  }
}

void on_stop_signal(std::function<void(int)> fn) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::thread([set, fn = std::move(fn)] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return;
    fn(sig);
    if (sigwait(&set, &sig) == 0) std::_Exit(128 + sig);
  }).detach();
}

namespace {
// A validator that accepts what `check` accepts and reports its Error message.
CLI::Validator checking(std::function<void(const std::string&)> check) {
  return CLI::Validator(
      [check = std::move(check)](std::string& s) -> std::string {
        try {
          check(s);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      "");
}
}  // namespace

CLI::Validator duration_validator() {
  return checking([](const std::string& s) {
    if (timeutil::parse_duration(s) <= 0) throw Error(Code::usage, "must be positive");
  });
}

CLI::Validator size_validator() {
  return checking([](const std::string& s) { timeutil::parse_size(s); });
}

CLI::Validator region_validator() {
  return checking([](const std::string& s) { check_region(s, "region name"); });
}

}  // namespace flk::cli
