#include "flk/util/error.hpp"

#include <cerrno>
#include <cstring>

namespace flk {

std::string_view code_name(Code code) {
  switch (code) {
    case Code::ok: return "ok";
    case Code::diverged: return "diverged";
    case Code::usage: return "usage";
    case Code::data: return "data";
    case Code::no_input: return "no_input";
    case Code::unavailable: return "unavailable";
    case Code::internal: return "internal";
    case Code::cant_create: return "cant_create";
    case Code::io: return "io";
    case Code::temp_fail: return "temp_fail";
    case Code::protocol: return "protocol";
    case Code::no_perm: return "no_perm";
    case Code::config: return "config";
  }
  return "unknown";
}

static Code code_for_errno(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR: return Code::no_input;
    case EACCES:
    case EPERM:
    case EROFS: return Code::no_perm;
    case EAGAIN:
    case EINTR: return Code::temp_fail;
    default: return Code::io;
  }
}

Error sys_error(std::string_view what, std::string_view path, int err) {
  return sys_error(what, path, err, code_for_errno(err));
}

Error sys_error(std::string_view what, std::string_view path, int err, Code code) {
  return Error(code, fmt::format("{} '{}': {}", what, path, std::strerror(err)));
}

}  // namespace flk
