// flk-serve: the segment mailbox that receives what peers ship. See flk-serve(1).
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "flk/cli/cli.hpp"
#include "flk/transport/server.hpp"
#include "flk/transport/transport.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-serve", "flk-serve: the authenticated segment mailbox that receives what peers ship");
  CLI::App& app = tool.app();
  std::string listen, mailbox, tls_cert, tls_key, client_ca, max_body = "256MiB", timeout = "30s", port_file;
  std::vector<std::string> token_files;
  bool no_auth = false;
  size_t threads = 8;
  app.add_option("--listen", listen, "address to listen on (default: serve.listen; port 0 picks a free port)")
      ->type_name("ADDR:PORT");
  app.add_option("--mailbox", mailbox, "where received segments are stored (default: paths.mailbox)")->type_name("DIR");
  app.add_option("--token-file", token_files,
                 "accept the bearer token in FILE as peer REGION (repeatable; default: serve.tokens); without "
                 "REGION= the token may act for any region")
      ->type_name("[REGION=]FILE");
  app.add_option("--tls-cert", tls_cert, "serve HTTPS with this certificate (default: serve.tlsCert)")->type_name("FILE");
  app.add_option("--tls-key", tls_key, "the certificate's private key (default: serve.tlsKey)")->type_name("FILE");
  app.add_option("--client-ca", client_ca,
                 "require client certificates signed by these CAs; the common name is the peer's region (default: "
                 "serve.clientCA)")
      ->type_name("FILE");
  app.add_flag("--no-auth", no_auth, "serve without authentication (refused unless the address is loopback)");
  app.add_option("--max-body", max_body, "largest segment accepted (default 256MiB)")
      ->type_name("SIZE")
      ->check(flk::cli::size_validator());
  app.add_option("--threads", threads, "requests served at once (default 8)")->type_name("N")->check(CLI::Range(1, 1024));
  app.add_option("--timeout", timeout, "a connection idle this long in a read or write is closed (default 30s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--port-file", port_file, "write the bound port to FILE once listening")->type_name("FILE");

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    flk::transport::ServeOptions o;
    o.listen = listen.empty() ? cfg.serve.listen : listen;
    o.mailbox = mailbox.empty() ? cfg.paths.mailbox : mailbox;
    o.tls_cert = tls_cert.empty() ? cfg.serve.tls_cert : tls_cert;
    o.tls_key = tls_key.empty() ? cfg.serve.tls_key : tls_key;
    o.client_ca = client_ca.empty() ? cfg.serve.client_ca : client_ca;
    std::map<std::string, std::string> files;  // file → region
    if (token_files.empty()) {
      for (const auto& [region, file] : cfg.serve.tokens) files[file] = region;
    } else {
      for (const auto& spec : token_files) {
        size_t eq = spec.find('=');
        std::string region = eq == std::string::npos ? "*" : spec.substr(0, eq);
        if (region != "*") flk::check_region(region, "--token-file region");
        files[eq == std::string::npos ? spec : spec.substr(eq + 1)] = region;
      }
    }
    for (const auto& [file, region] : files) {
      std::string token = flk::transport::read_token_file(file);
      if (o.tokens.count(token)) flk::fail(flk::Code::config, "token file '{}' holds a token given twice", file);
      o.tokens[token] = region;
    }
    o.no_auth = no_auth;
    o.max_body = flk::timeutil::parse_size(max_body);
    o.threads = threads;
    o.io_timeout = flk::timeutil::parse_duration(timeout);
    if (tool.verbosity() >= 0) o.log = [](const std::string& line) { std::fprintf(stderr, "flk-serve: %s\n", line.c_str()); };

    flk::transport::Server server(o);
    flk::cli::on_stop_signal([&](int) { server.stop(); });
    if (!port_file.empty()) flk::fs::write_file_atomic(port_file, std::to_string(server.port()) + "\n");
    tool.warn(fmt::format("listening on {} (port {}), mailbox '{}'", o.listen, server.port(), o.mailbox.string()));
    server.run();
    tool.info("stopped");
    return 0;
  });
}
