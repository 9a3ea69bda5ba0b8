#include "flk/util/error.hpp"

#include <cerrno>
#include <cstring>

namespace flk {

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

Code most_serious(Code a, Code b) {
  static constexpr Code order[] = {Code::data,        Code::no_perm,  Code::config,   Code::protocol, Code::io,
                                   Code::cant_create, Code::no_input, Code::internal, Code::usage,    Code::unavailable,
                                   Code::temp_fail};
  for (Code c : order)
    if (a == c || b == c) return c;
  return a == Code::ok ? b : a;
}

}  // namespace flk
