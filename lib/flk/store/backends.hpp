// Internal: the back ends' factories, for store.cpp's open(). Not a public header.
#pragma once

#include <memory>
#include <string>

#include "flk/store/store.hpp"

namespace flk::store {

// path: the file (sqlite:///abs → "/abs", sqlite://rel → "rel").
std::unique_ptr<Store> open_sqlite(const std::string& path, const std::string& url);
// url: the whole postgres:// or postgresql:// URL (a libpq connection URI).
std::unique_ptr<Store> open_postgres(const std::string& url);
// url: redis://[:password@]host[:port][/db]
std::unique_ptr<Store> open_redis(const std::string& url);

}  // namespace flk::store
