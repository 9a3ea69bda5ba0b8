#include <doctest/doctest.h>

#include <sys/stat.h>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/json.hpp"
#include "test_util.hpp"

using namespace flk;
namespace stdfs = std::filesystem;

TEST_CASE("atomic files: all or nothing") {
  test::TempDir t;
  fs::write_file_atomic(t / "f", "one");
  CHECK(fs::read_file(t / "f") == "one");
  {
    fs::AtomicFile f(t / "f");
    f.write("two, never committed");
  }
  CHECK(fs::read_file(t / "f") == "one");
  size_t n = 0;
  for (auto& e : stdfs::directory_iterator(t.path())) (void)e, ++n;
  CHECK(n == 1);  // the temp file is gone
  fs::write_file_atomic(t / "f", "three", 0600);
  CHECK(fs::read_file(t / "f") == "three");
  struct stat st;
  REQUIRE(::stat((t / "f").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("errors name the path and pick the exit code") {
  test::TempDir t;
  try {
    fs::read_file(t / "nope");
    FAIL("read");
  } catch (const Error& e) {
    CHECK(e.code() == Code::no_input);
    CHECK(std::string(e.what()) == "cannot open '" + (t / "nope").string() + "': No such file or directory");
  }
  fs::write_file_atomic(t / "file", "x");
  try {
    fs::make_dirs(t / "file" / "sub");
    FAIL("mkdir");
  } catch (const Error& e) {
    CHECK(e.code() == Code::cant_create);
  }
  CHECK_THROWS_AS(fs::write_file_atomic(t / "file" / "x", "y"), Error);
}

TEST_CASE("sha256 and hex") {
  CHECK(hash::to_hex(hash::sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  hash::Sha256 h;
  h.update("a");
  hash::Sha256 copy = h;
  h.update("bc");
  CHECK(h.finish() == hash::sha256("abc"));
  CHECK(copy.finish() == hash::sha256("a"));
  hash::Digest d;
  CHECK(hash::from_hex(hash::to_hex(hash::sha256("x")), d));
  CHECK(d == hash::sha256("x"));
  CHECK_FALSE(hash::from_hex("zz", d));
}

TEST_CASE("json strings are escaped") {
  std::string out;
  json::append_string(out, "a\"b\\c\n\x01");
  CHECK(out == R"("a\"b\\c\n\u0001")");
}
