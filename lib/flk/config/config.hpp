// The configuration file (DESIGN.md §7, flk.yaml(5)): YAML in the seed's shape.
//
// Loading is strict: an unknown key, a wrong type or a bad value throws Error(config)
// naming the file, the line and the key:
//   invalid configuration '/etc/flk/flk.yaml': line 5: key 'crr.retry.deadline': …
// Every field has a default, so a tool runs on the embedded defaults without a file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flk/util/time.hpp"

namespace flk::config {

struct Endpoint {
  std::string url;         // http(s)://host:port or file:///dir
  std::string token_file;  // bearer token presented to that peer
  std::string ca_file;     // CA bundle to verify its certificate
  std::string cert_file;   // client certificate presented to it (when it asks for one)
  std::string key_file;
};

struct Policy {
  std::string tenant_id;
  std::vector<std::string> target_regions;
};

enum class Mode { two_region, multi_way, selective };

struct Config {
  std::string source;  // the file it came from ("" for the embedded defaults)
  std::string region;

  struct {
    std::string wal = "/var/lib/flk/wal";
    std::string mailbox = "/var/lib/flk/mailbox";
    std::string state = "/var/lib/flk/state";
    std::string worm = "/var/lib/flk/worm.jsonl";
    bool worm_set = false;  // paths.worm was given (flk-read logs conflicts only then)
  } paths;

  struct {
    uint64_t segment_bytes = 64u << 20;
    timeutil::Nanos segment_age = 1 * timeutil::kSecond;
  } wal;

  struct {
    std::string url = "sqlite:///var/lib/flk/dedup.db";
  } dedup;

  struct {
    bool enabled = false;
    std::string source_region;
    std::vector<std::string> target_regions;
    Mode mode = Mode::two_region;
    std::vector<std::string> peers;
    std::vector<Policy> policies;
    std::map<std::string, Endpoint> endpoints;
    struct {
      timeutil::Nanos initial_backoff = 1 * timeutil::kSecond;
      timeutil::Nanos max_backoff = 60 * timeutil::kSecond;
      timeutil::Nanos deadline = 300 * timeutil::kSecond;
    } retry;
  } crr;

  struct {
    std::string listen = "0.0.0.0:8443";
    std::string tls_cert, tls_key, client_ca;
    std::map<std::string, std::string> tokens;  // peer region → token file
  } serve;

  // flk-diverge: the dedup stores of the regions to compare (this region's defaults to
  // dedup.url).
  struct {
    std::map<std::string, std::string> stores;
  } diverge;

  // The regions this region ships to, from the mode: targetRegions, peers, or the
  // union of the policies' targets.
  std::vector<std::string> targets() const;
};

// Parses YAML text; `name` is used in messages.
Config parse(const std::string& yaml_text, const std::string& name);

// Loads the file `explicit_path` names, else $FLK_CONFIG, else /etc/flk/flk.yaml.
// A missing file is an error when named (flag or environment); the default path may be
// absent, and then the embedded defaults are returned.
Config load(const std::optional<std::string>& explicit_path);

constexpr const char* kDefaultPath = "/etc/flk/flk.yaml";
// The smallest wal.segmentBytes (and --segment-bytes) accepted.
constexpr uint64_t kMinSegmentBytes = 512;

// "HOST:PORT" or "[V6]:PORT", port 1–65535.
bool valid_listen_address(std::string_view s);

}  // namespace flk::config
