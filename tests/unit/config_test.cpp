#include <doctest/doctest.h>

#include <cstdlib>

#include "flk/config/config.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "test_util.hpp"

using namespace flk;

namespace {
std::string config_error(const std::string& yaml) {
  try {
    config::parse(yaml, "flk.yaml");
  } catch (const Error& e) {
    CHECK(e.code() == Code::config);
    return e.what();
  }
  return "accepted";
}
}  // namespace

TEST_CASE("the seed's shape loads") {
  auto c = config::parse(R"(
region: us-east-1
paths:
  wal: /w
  mailbox: /m
  state: /s
  worm: /worm.jsonl
wal: {segmentBytes: 8MiB, segmentAge: 500ms}
dedup:
  url: sqlite:///d.db
crr:
  enabled: true
  sourceRegion: us-east-1
  replicationMode: selective
  policies:
    - tenantID: tenant-a
      targetRegions: [us-west-2]
    - tenantID: tenant-b
      targetRegions: [eu-west-1, us-west-2]
  endpoints:
    us-west-2:
      url: https://flk.us-west-2.example:8443
      tokenFile: /etc/flk/tokens/to-us-west-2
      caFile: /etc/flk/ca.pem
  retry: {initialBackoff: 1s, maxBackoff: 60s, deadline: 5m}
serve:
  listen: 127.0.0.1:8443
  tokens:
    us-west-2: /etc/flk/tokens/from-us-west-2
)",
                         "flk.yaml");
  CHECK(c.region == "us-east-1");
  CHECK(c.paths.wal == "/w");
  CHECK(c.wal.segment_bytes == 8u << 20);
  CHECK(c.wal.segment_age == 500'000'000);
  CHECK(c.crr.enabled);
  CHECK(c.crr.mode == config::Mode::selective);
  CHECK(c.targets() == std::vector<std::string>{"us-west-2", "eu-west-1"});
  CHECK(c.crr.endpoints.at("us-west-2").ca_file == "/etc/flk/ca.pem");
  CHECK(c.crr.retry.deadline == 300 * timeutil::kSecond);
  CHECK(c.serve.tokens.at("us-west-2") == "/etc/flk/tokens/from-us-west-2");

  auto two = config::parse("crr:\n  enabled: true\n  sourceRegion: us-west-2\n  targetRegions: [us-east-1]\n", "x");
  CHECK(two.region == "us-west-2");
  CHECK(two.targets() == std::vector<std::string>{"us-east-1"});
  auto multi = config::parse("region: us-east-1\ncrr:\n  replicationMode: multi-way\n  peers: [us-west-2, eu-west-1]\n", "x");
  CHECK(multi.targets().size() == 2);
  CHECK(config::parse("", "empty").paths.wal == "/var/lib/flk/wal");
  auto dv = config::parse("diverge:\n  stores:\n    us-west-2: postgres://h/db\n    eu-west-1: redis://h:6379/0\n", "x");
  CHECK(dv.diverge.stores == std::map<std::string, std::string>{{"eu-west-1", "redis://h:6379/0"},
                                                                {"us-west-2", "postgres://h/db"}});
}

TEST_CASE("every kind of bad file names file, line and key") {
  CHECK(config_error("region: us-east-1\nregoin: x\n") ==
        "invalid configuration 'flk.yaml': line 2: key 'regoin': unknown key (expected one of: crr, dedup, diverge, "
        "paths, region, serve, wal)");
  CHECK(config_error("diverge:\n  stores:\n    us-west-2: mysql://x\n")
            .find("line 3: key 'diverge.stores.us-west-2': unsupported store URL 'mysql://x'") != std::string::npos);
  CHECK(config_error("diverge:\n  stores:\n    US: sqlite:///x\n").find("invalid region name 'US'") != std::string::npos);
  CHECK(config_error("region: us-east-1\ncrr:\n  retry:\n    deadline: soon\n")
            .find("invalid configuration 'flk.yaml': line 4: key 'crr.retry.deadline': invalid duration 'soon'") == 0);
  CHECK(config_error("region: US_EAST\n").find("line 1: key 'region': invalid region name 'US_EAST'") != std::string::npos);
  CHECK(config_error("crr:\n  enabled: maybe\n").find("line 2: key 'crr.enabled': must be true or false") != std::string::npos);
  CHECK(config_error("crr:\n  targetRegions: us-west-2\n").find("key 'crr.targetRegions': must be a list") != std::string::npos);
  CHECK(config_error("crr:\n  replicationMode: star\n").find("unknown mode 'star'") != std::string::npos);
  CHECK(config_error("crr:\n  replicationMode: selective\n").find("needs at least one policy") != std::string::npos);
  CHECK(config_error("region: a\ncrr:\n  sourceRegion: b\n").find("line 3: key 'crr.sourceRegion'") != std::string::npos);
  CHECK(config_error("paths: [1, 2]\n").find("line 1: key 'paths': must be a mapping") != std::string::npos);
  CHECK(config_error("region: [unclosed\n").find("invalid configuration 'flk.yaml': line") == 0);
  CHECK(config_error("crr:\n  policies:\n    - tenantID: a\n").find("key 'crr.policies[0].targetRegions': missing") !=
        std::string::npos);
  CHECK(config_error("crr:\n  endpoints:\n    us-west-2: {url: ftp://x}\n").find("unsupported URL 'ftp://x'") !=
        std::string::npos);
  CHECK(config_error("wal:\n  segmentBytes: 100\n").find("line 2: key 'wal.segmentBytes': must be at least 512 bytes") !=
        std::string::npos);
  CHECK(config_error("crr:\n  retry: {initialBackoff: 2m, maxBackoff: 1m}\n").find("must not exceed maxBackoff") !=
        std::string::npos);
  CHECK(config_error("dedup:\n  url: mysql://x\n").find("line 2: key 'dedup.url': unsupported store URL 'mysql://x'") !=
        std::string::npos);
  CHECK(config_error("serve:\n  listen: localhost\n").find("key 'serve.listen': 'localhost' is not HOST:PORT") !=
        std::string::npos);
  CHECK(config_error("serve:\n  listen: '[::1]:0'\n").find("is not HOST:PORT") != std::string::npos);
  CHECK(config::parse("serve:\n  listen: '[::1]:8443'\n", "x").serve.listen == "[::1]:8443");
  CHECK(config_error("wal:\n  segmentBytes: lots\n").find("line 2: key 'wal.segmentBytes': invalid size 'lots'") !=
        std::string::npos);
}

TEST_CASE("lookup: --config, then FLK_CONFIG; a named file must exist") {
  test::TempDir t;
  fs::write_file_atomic(t / "a.yaml", "region: eu-west-1\n");
  CHECK(config::load((t / "a.yaml").string()).region == "eu-west-1");
  ::setenv("FLK_CONFIG", (t / "a.yaml").c_str(), 1);
  CHECK(config::load(std::nullopt).region == "eu-west-1");
  ::setenv("FLK_CONFIG", (t / "missing.yaml").c_str(), 1);
  try {
    config::load(std::nullopt);
    FAIL("loaded a missing file");
  } catch (const Error& e) {
    CHECK(e.code() == Code::config);
    CHECK(std::string(e.what()).find("missing.yaml") != std::string::npos);
  }
  ::unsetenv("FLK_CONFIG");
}
