// The inbox WAL's byte format. flk-wal(5) documents the same; keep them in step.
//
// A WAL is a directory of segments, one file each:
//
//   0000000000000001.wal          sealed: immutable, shippable
//   0000000000000001.wal.sha256   its SHA-256, sha256sum(1) format, written at seal
//   0000000000000002.open         the one open segment, being appended
//   LOCK                          flock(2)ed by the one writer; holds its pid
//
// Names are the 16-digit zero-padded sequence number, so they sort in order. Numbers
// start at 1, rise by one and are never reused. Sealing = append the seal frame,
// fsync, write the sidecar, rename N.open → N.wal, fsync the directory.
//
// A segment is a header followed by frames:
//
//   header (192 bytes)
//     0   8  magic "FLKWAL\r\n"
//     8   4  u32 format version (= 1)
//     12  4  u32 flags: bit 0 = re-encoded (selective replication; see source_sha256)
//     16  8  u64 sequence number
//     24  8  i64 created, ns since the epoch
//     32  32 SHA-256 of the previous sealed segment's file (zeros for sequence 1)
//     64  32 SHA-256 of the source segment (re-encoded segments; zeros otherwise)
//     96  64 region, NUL-padded (1–63 bytes)
//     160 24 reserved, zero
//     184 8  u64 XXH3-64 of bytes 0–183
//
//   frame (16-byte head + payload)
//     0   4  u32 payload length (≤ kMaxFramePayload)
//     4   1  u8  type: 1 record, 2 seal
//     5   3  reserved, zero
//     8   4  u32 head checksum: low 32 bits of XXH3-64 of bytes 0–7
//     12  4  u32 payload checksum: low 32 bits of XXH3-64 of the payload
//     16  n  payload: a record's canonical encoding (flk/core/record.hpp), or
//
//   The head has its own checksum so that a damaged length is told apart from a torn
//   tail: a frame whose head is sound but whose payload runs past the end of the file
//   was being written when the writer stopped; a head that fails its checksum is
//   damage unless everything after it to the end of the file is zero.
//
//   seal payload (24 bytes): u64 record count, i64 first ts, i64 last ts
//                            (ts are 0 when the segment holds no record)
//
// All integers are little-endian. A sealed segment ends with exactly one seal frame.
// A segment's digest is the SHA-256 of its whole file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace flk::wal {

constexpr std::string_view kMagic{"FLKWAL\r\n", 8};
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kFlagReencoded = 1;
constexpr size_t kHeaderSize = 192;
constexpr size_t kHeaderChecksumOffset = 184;
constexpr size_t kFrameHeadSize = 16;
constexpr size_t kSealPayloadSize = 24;
constexpr size_t kSealFrameSize = kFrameHeadSize + kSealPayloadSize;
// A record is at most ~1 MiB of payload plus its fields; frames are capped a little above.
constexpr uint32_t kMaxFramePayload = (1u << 20) + (1u << 16);

enum class FrameType : uint8_t { record = 1, seal = 2 };

constexpr std::string_view kSealedSuffix = ".wal";
constexpr std::string_view kOpenSuffix = ".open";
constexpr std::string_view kDigestSuffix = ".wal.sha256";
constexpr std::string_view kLockName = "LOCK";

}  // namespace flk::wal
