// The http:// and https:// transport: a libcurl client of flk-serve's mailbox protocol
// (flk-serve(1)). Used through transport::open().
#pragma once

#include <memory>
#include <string_view>

#include "flk/transport/transport.hpp"

namespace flk::transport {

// The protocol's names, shared by client and server.
constexpr std::string_view kDigestHeader = "X-Flk-Sha256";
constexpr std::string_view kApiPrefix = "/v1";

std::unique_ptr<Transport> open_http(std::string_view url, const Options& options);

}  // namespace flk::transport
