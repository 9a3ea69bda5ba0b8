// Divergence between the dedup stores of several regions (DESIGN.md §1, §5,
// flk-diverge(1)): find the pcs_ids whose outcome differs (conflict) or that are
// absent where they should be (missing), and reconcile them by first write wins.
//
// scan() streams every store in pcs_id order and merges them, so memory does not grow
// with the stores: the pcs_ids are split into ranges, which threads scan in parallel
// (each merging every store's cursor over its range), and the calling thread looks up
// and reports what they found, in order.
//
// Where a record should be (Expect): in every scanned region, except in selective
// replication, where a record written in region R for tenant T belongs in R and in the
// regions the policies route T to (the policies are taken as the same in every region's
// configuration); a tenant without a policy stays in its region.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "flk/config/config.hpp"
#include "flk/store/store.hpp"

namespace flk::diverge {

struct RegionStore {
  std::string region;
  std::unique_ptr<store::Store> store;
  std::string url;  // to open a second connection: scan() looks records up while it scans
};

class Expect {
 public:
  // Every record everywhere.
  Expect() = default;
  // From a configuration: selective policies, or everywhere.
  static Expect from_config(const config::Config& c);
  bool expected(const Record& r, const std::string& region) const;
  bool expected(std::string_view tenant, std::string_view origin, const std::string& region) const;

 private:
  std::optional<std::map<std::string, std::set<std::string>, std::less<>>> routes_;  // tenant → targets
};

struct Finding {
  enum class Kind { conflict, missing };
  Kind kind = Kind::conflict;
  std::string pcs_id, tenant_id;
  // Per region, in the order of the stores: its winner, as looked up once the scan found
  // the stores disagree on the pcs_id (absent: not there).
  std::vector<std::optional<store::Stored>> stored;
};
std::string_view kind_name(Finding::Kind k);

struct ScanStats {
  uint64_t ids = 0;  // distinct pcs_ids seen
  uint64_t conflicts = 0, missing = 0;
};

// Merges the stores' (pcs_id, outcome) scans; the pcs_ids on which they do not all agree
// are looked up (a second connection to each, RegionStore::url: the record may have
// changed since the scan passed it — what is looked up decides) and fn is called for each
// divergent one, in pcs_id order. With `buckets` (sorted bucket numbers of
// `bucket_count`), only pcs_ids in those buckets are compared. Errors of any store's
// scan are thrown (naming its URL).
ScanStats scan(std::vector<RegionStore>& stores, const Expect& expect, const std::vector<uint32_t>* buckets,
               uint32_t bucket_count, const std::function<void(const Finding&)>& fn);

// One JSON line (no newline) for a finding:
//   {"pcs_id":"…","tenant_id":"…","kind":"conflict","regions":{"us-east-1":{"outcome":…,
//    "ts":…,"origin":…,"digest":…},"us-west-2":null}}
std::string finding_json(const Finding& f, const std::vector<RegionStore>& stores);

// Reconciliation of one finding: every record known for the pcs_id in any store (the
// stored winners and the conflict evidence), the first write among them by DESIGN.md
// §1, and what each store needs.
struct Plan {
  std::string pcs_id;
  store::Stored winner;
  std::vector<Record> records;  // every distinct record known (winner included)
  std::vector<bool> install;     // per store: its winner is not the first write, and it should hold it
};
// Plans the findings (looks up the evidence of their pcs_ids in every store).
std::vector<Plan> plan(std::vector<RegionStore>& stores, const Expect& expect, const std::vector<Finding>& findings);
// Applies plans: every record known goes to each store that needs the winner (first
// write wins installs it and keeps the others as evidence); one atomic apply per store.
void apply(std::vector<RegionStore>& stores, const std::vector<Plan>& plans);
std::string plan_json(const Plan& p, const std::vector<RegionStore>& stores, bool applied);

}  // namespace flk::diverge
