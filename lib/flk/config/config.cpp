#include "flk/config/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <set>

#include <yaml-cpp/yaml.h>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"

namespace flk::config {

namespace {

// Walks the YAML tree with the name of the file and the dotted key for messages.
struct Walker {
  const std::string& name;

  [[noreturn]] void bad(const YAML::Node& n, const std::string& key, const std::string& why) const {
    fail(Code::config, "invalid configuration '{}': line {}: key '{}': {}", name, n.Mark().line + 1, key, why);
  }

  // Calls fn(key, value) for each entry of a mapping; unknown keys are errors.
  void map(const YAML::Node& n, const std::string& path, const std::set<std::string>& known,
           const std::function<void(const std::string&, const YAML::Node&)>& fn) const {
    if (!n.IsMap()) bad(n, path.empty() ? "(top level)" : path, "must be a mapping");
    for (const auto& kv : n) {
      std::string k = kv.first.as<std::string>();
      std::string full = path.empty() ? k : path + "." + k;
      if (!known.count(k)) {
        std::string list;
        for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
        bad(kv.first, full, fmt::format("unknown key (expected one of: {})", list));
      }
      fn(full, kv.second);
    }
  }

  std::string str(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) bad(n, key, "must be a string");
    return n.as<std::string>();
  }

  // A dedup store URL of a scheme flk knows (store.hpp).
  std::string store_url(const YAML::Node& n, const std::string& key) const {
    std::string url = str(n, key);
    for (const char* scheme : {"sqlite://", "postgres://", "postgresql://", "redis://"})
      if (url.rfind(scheme, 0) == 0) return url;
    bad(n, key, fmt::format("unsupported store URL '{}' (sqlite:///path, postgres://…, redis://host:port/db)", url));
  }

  bool boolean(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) bad(n, key, "must be true or false");
    bool b;
    if (!YAML::convert<bool>::decode(n, b)) bad(n, key, fmt::format("must be true or false, not '{}'", n.Scalar()));
    return b;
  }

  std::string region(const YAML::Node& n, const std::string& key) const {
    std::string r = str(n, key);
    if (!valid_region(r)) bad(n, key, fmt::format("invalid region name '{}' (must match [a-z0-9][a-z0-9-]{{0,62}})", r));
    return r;
  }

  std::vector<std::string> regions(const YAML::Node& n, const std::string& key) const {
    if (!n.IsSequence()) bad(n, key, "must be a list of region names");
    std::vector<std::string> out;
    for (size_t i = 0; i < n.size(); ++i) {
      std::string r = region(n[i], fmt::format("{}[{}]", key, i));
      if (std::find(out.begin(), out.end(), r) != out.end()) bad(n[i], key, fmt::format("region '{}' listed twice", r));
      out.push_back(r);
    }
    return out;
  }

  timeutil::Nanos duration(const YAML::Node& n, const std::string& key) const {
    std::string s = str(n, key);
    try {
      timeutil::Nanos d = timeutil::parse_duration(s);
      if (d <= 0) bad(n, key, "must be positive");
      return d;
    } catch (const Error& e) {
      if (e.code() == Code::config) throw;
      bad(n, key, e.what());
    }
  }

  uint64_t size(const YAML::Node& n, const std::string& key) const {
    std::string s = str(n, key);
    try {
      return timeutil::parse_size(s);
    } catch (const Error& e) {
      bad(n, key, e.what());
    }
  }
};

}  // namespace

bool valid_listen_address(std::string_view s) {
  size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = s.substr(0, colon), port = s.substr(colon + 1);
  if (host.front() == '[' ? host.back() != ']' || host.size() < 3 : host.find(':') != std::string_view::npos)
    return false;
  if (port.empty() || port.size() > 5) return false;
  unsigned p = 0;
  for (char ch : port) {
    if (ch < '0' || ch > '9') return false;
    p = p * 10 + static_cast<unsigned>(ch - '0');
  }
  return p >= 1 && p <= 65535;
}

std::vector<std::string> Config::targets() const {
  switch (crr.mode) {
    case Mode::two_region: return crr.target_regions;
    case Mode::multi_way: return crr.peers;
    case Mode::selective: {
      std::vector<std::string> out;
      for (const auto& p : crr.policies)
        for (const auto& r : p.target_regions)
          if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
      return out;
    }
  }
  return {};
}

Config parse(const std::string& text, const std::string& name) {
  Config c;
  c.source = name;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail(Code::config, "invalid configuration '{}': line {}: {}", name, e.mark.line + 1, e.msg);
  }
  if (root.IsNull()) return c;  // an empty file: all defaults
  Walker w{name};
  YAML::Node mode_node, region_node, source_node;
  w.map(root, "", {"region", "paths", "wal", "dedup", "crr", "serve", "diverge"},
        [&](const std::string& key, const YAML::Node& v) {
    if (key == "region") {
      c.region = w.region(v, key);
      region_node = v;
    } else if (key == "paths") {
      w.map(v, key, {"wal", "mailbox", "state", "worm"}, [&](const std::string& k, const YAML::Node& x) {
        std::string s = w.str(x, k);
        if (s.empty()) w.bad(x, k, "must not be empty");
        if (k == "paths.wal") c.paths.wal = s;
        else if (k == "paths.mailbox") c.paths.mailbox = s;
        else if (k == "paths.state") c.paths.state = s;
        else c.paths.worm = s, c.paths.worm_set = true;
      });
    } else if (key == "wal") {
      w.map(v, key, {"segmentBytes", "segmentAge"}, [&](const std::string& k, const YAML::Node& x) {
        if (k == "wal.segmentBytes") {
          c.wal.segment_bytes = w.size(x, k);
          if (c.wal.segment_bytes < kMinSegmentBytes)
            w.bad(x, k, fmt::format("must be at least {} bytes", kMinSegmentBytes));
        }
        else c.wal.segment_age = w.duration(x, k);
      });
    } else if (key == "dedup") {
      w.map(v, key, {"url"}, [&](const std::string& k, const YAML::Node& x) { c.dedup.url = w.store_url(x, k); });
    } else if (key == "diverge") {
      w.map(v, key, {"stores"}, [&](const std::string& k, const YAML::Node& x) {
        if (!x.IsMap()) w.bad(x, k, "must be a mapping of region → store URL");
        for (const auto& kv : x) {
          std::string region = kv.first.as<std::string>();
          if (!valid_region(region)) w.bad(kv.first, k + "." + region, fmt::format("invalid region name '{}'", region));
          c.diverge.stores[region] = w.store_url(kv.second, k + "." + region);
        }
      });
    } else if (key == "crr") {
      w.map(v, key,
            {"enabled", "sourceRegion", "targetRegions", "replicationMode", "peers", "policies", "endpoints", "retry"},
            [&](const std::string& k, const YAML::Node& x) {
              if (k == "crr.enabled") c.crr.enabled = w.boolean(x, k);
              else if (k == "crr.sourceRegion") {
                c.crr.source_region = w.region(x, k);
                source_node = x;
              } else if (k == "crr.targetRegions") c.crr.target_regions = w.regions(x, k);
              else if (k == "crr.peers") c.crr.peers = w.regions(x, k);
              else if (k == "crr.replicationMode") {
                std::string m = w.str(x, k);
                mode_node = x;
                if (m == "multi-way") c.crr.mode = Mode::multi_way;
                else if (m == "selective") c.crr.mode = Mode::selective;
                else if (m == "two-region") c.crr.mode = Mode::two_region;
                else w.bad(x, k, fmt::format("unknown mode '{}' (two-region, multi-way, selective)", m));
              } else if (k == "crr.policies") {
                if (!x.IsSequence()) w.bad(x, k, "must be a list of {tenantID, targetRegions}");
                for (size_t i = 0; i < x.size(); ++i) {
                  Policy p;
                  std::string pk = fmt::format("{}[{}]", k, i);
                  bool have_tenant = false, have_targets = false;
                  w.map(x[i], pk, {"tenantID", "targetRegions"}, [&](const std::string& kk, const YAML::Node& y) {
                    if (kk == pk + ".tenantID") {
                      p.tenant_id = w.str(y, kk);
                      if (p.tenant_id.empty()) w.bad(y, kk, "must not be empty");
                      have_tenant = true;
                    } else {
                      p.target_regions = w.regions(y, kk);
                      have_targets = true;
                    }
                  });
                  if (!have_tenant) w.bad(x[i], pk + ".tenantID", "missing");
                  if (!have_targets) w.bad(x[i], pk + ".targetRegions", "missing");
                  for (const auto& q : c.crr.policies)
                    if (q.tenant_id == p.tenant_id)
                      w.bad(x[i], pk + ".tenantID", fmt::format("tenant '{}' has two policies", p.tenant_id));
                  c.crr.policies.push_back(std::move(p));
                }
              } else if (k == "crr.endpoints") {
                if (!x.IsMap()) w.bad(x, k, "must be a mapping of region → {url, tokenFile, caFile, certFile, keyFile}");
                for (const auto& kv : x) {
                  std::string peer = kv.first.as<std::string>();
                  std::string pk = k + "." + peer;
                  if (!valid_region(peer)) w.bad(kv.first, pk, fmt::format("invalid region name '{}'", peer));
                  Endpoint e;
                  w.map(kv.second, pk, {"url", "tokenFile", "caFile", "certFile", "keyFile"}, [&](const std::string& kk, const YAML::Node& y) {
                    std::string s = w.str(y, kk);
                    if (kk == pk + ".url") {
                      if (s.rfind("http://", 0) != 0 && s.rfind("https://", 0) != 0 && s.rfind("file://", 0) != 0)
                        w.bad(y, kk, fmt::format("unsupported URL '{}' (http://, https://, file://)", s));
                      e.url = s;
                    } else if (kk == pk + ".tokenFile") e.token_file = s;
                    else if (kk == pk + ".caFile") e.ca_file = s;
                    else if (kk == pk + ".certFile") e.cert_file = s;
                    else e.key_file = s;
                  });
                  if (e.url.empty()) w.bad(kv.second, pk + ".url", "missing");
                  if (e.cert_file.empty() != e.key_file.empty())
                    w.bad(kv.second, pk + (e.cert_file.empty() ? ".certFile" : ".keyFile"), "missing: certFile and keyFile go together");
                  c.crr.endpoints[peer] = e;
                }
              } else if (k == "crr.retry") {
                w.map(x, k, {"initialBackoff", "maxBackoff", "deadline"}, [&](const std::string& kk, const YAML::Node& y) {
                  timeutil::Nanos d = w.duration(y, kk);
                  if (kk == "crr.retry.initialBackoff") c.crr.retry.initial_backoff = d;
                  else if (kk == "crr.retry.maxBackoff") c.crr.retry.max_backoff = d;
                  else c.crr.retry.deadline = d;
                });
                if (c.crr.retry.initial_backoff > c.crr.retry.max_backoff)
                  w.bad(x, k + ".initialBackoff", "must not exceed maxBackoff");
              }
            });
    } else if (key == "serve") {
      w.map(v, key, {"listen", "tlsCert", "tlsKey", "clientCA", "tokens"}, [&](const std::string& k, const YAML::Node& x) {
        if (k == "serve.tokens") {
          if (!x.IsMap()) w.bad(x, k, "must be a mapping of peer region → token file");
          for (const auto& kv : x) {
            std::string peer = kv.first.as<std::string>();
            if (!valid_region(peer)) w.bad(kv.first, k + "." + peer, fmt::format("invalid region name '{}'", peer));
            c.serve.tokens[peer] = w.str(kv.second, k + "." + peer);
          }
          return;
        }
        std::string s = w.str(x, k);
        if (k == "serve.listen") {
          if (!valid_listen_address(s)) w.bad(x, k, fmt::format("'{}' is not HOST:PORT (port 1–65535)", s));
          c.serve.listen = s;
        }
        else if (k == "serve.tlsCert") c.serve.tls_cert = s;
        else if (k == "serve.tlsKey") c.serve.tls_key = s;
        else c.serve.client_ca = s;
      });
    }
  });

  // Cross-field rules.
  if (!c.crr.source_region.empty() && !c.region.empty() && c.crr.source_region != c.region)
    w.bad(source_node, "crr.sourceRegion",
          fmt::format("'{}' differs from region '{}' (they must be equal)", c.crr.source_region, c.region));
  if (c.region.empty()) c.region = c.crr.source_region;
  if (c.crr.mode == Mode::selective && c.crr.policies.empty())
    w.bad(mode_node, "crr.policies", "selective replication needs at least one policy");
  if (c.crr.mode == Mode::multi_way && c.crr.peers.empty())
    w.bad(mode_node, "crr.peers", "multi-way replication needs peers");
  for (const auto& t : c.targets())
    if (t == c.region && !c.region.empty())
      w.bad(region_node.IsDefined() ? region_node : root, "crr", fmt::format("region '{}' lists itself as a target", t));
  return c;
}

Config load(const std::optional<std::string>& explicit_path) {
  std::string path;
  bool named = true;
  if (explicit_path && !explicit_path->empty()) path = *explicit_path;
  else if (const char* env = std::getenv("FLK_CONFIG"); env && *env) path = env;
  else {
    path = kDefaultPath;
    named = false;
  }
  if (!named && ::access(path.c_str(), F_OK) != 0) return Config{};
  std::string text;
  try {
    text = fs::read_file(path);
  } catch (const Error& e) {
    throw Error(Code::config, fmt::format("cannot load configuration: {}", e.what()));
  }
  return parse(text, path);
}

}  // namespace flk::config
