//! Wire codec benchmarks: a whole frame encoded and then decoded (header
//! check, crc32, flatbuffers verification, conversion to owned values).
//!
//! Run with `cargo bench --release --bench wire`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use markab_wire::codec::{decode_request, decode_response, Encoder};
use markab_wire::frame::{FrameDecoder, FRAME_BODY_BYTES_MAX};
use markab_wire::{Envelope, Gpid, Key, Request, Response, ResponseBody, SortKeyValue};

fn envelope() -> Envelope {
    Envelope {
        request_id: 12_345,
        timeout_ms: 1_000,
        gpid: Gpid {
            app_id: 2,
            partition_index: 7,
        },
        partition_hash: 0xae8b_1486_0a79_9888,
        partition_count: 0,
    }
}

/// Encodes `request` into a frame, runs it through a FrameDecoder and
/// decodes the body; returns the decoded request.
fn request_round_trip(
    encoder: &mut Encoder,
    decoder: &mut FrameDecoder,
    out: &mut Vec<u8>,
    request: &Request,
) -> Request {
    out.clear();
    encoder
        .request_frame(&envelope(), request, out)
        .expect("bench request fits in a frame");
    decoder.extend(out);
    let frame = decoder
        .next_frame()
        .expect("valid frame")
        .expect("whole frame");
    decode_request(&frame.body).expect("valid request").1
}

fn bench_requests(c: &mut Criterion) {
    let key = Key::new(b"user:0000012345".to_vec(), b"profile".to_vec());
    let mut cases = vec![("get", Request::Get(key.clone()))];
    for value_bytes in [100usize, 1000] {
        cases.push((
            if value_bytes == 100 {
                "set_100B"
            } else {
                "set_1000B"
            },
            Request::Set {
                key: key.clone(),
                value: vec![0x5A; value_bytes],
                ttl_seconds: 0,
            },
        ));
    }
    let mut group = c.benchmark_group("wire_request_frame_round_trip");
    for (name, request) in &cases {
        let mut encoder = Encoder::new();
        let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
        let mut out = Vec::with_capacity(4096);
        group.throughput(Throughput::Elements(1));
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(request_round_trip(
                    &mut encoder,
                    &mut decoder,
                    &mut out,
                    black_box(request),
                ))
            })
        });
    }
    group.finish();
}

fn bench_multi_get_response(c: &mut Criterion) {
    let response: Response = Ok(ResponseBody::MultiGet {
        kvs: (0..10)
            .map(|index| SortKeyValue {
                sort_key: format!("sort_key_{index:04}").into_bytes(),
                value: vec![index as u8; 100],
            })
            .collect(),
        incomplete: false,
    });
    let mut encoder = Encoder::new();
    let mut out = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("wire_response");
    group.bench_function("multi_get_10_records_encode", |b| {
        b.iter(|| {
            out.clear();
            encoder
                .response_frame(7, black_box(&response), &mut out)
                .expect("bench response fits in a frame");
            black_box(out.len())
        })
    });
    out.clear();
    encoder
        .response_frame(7, &response, &mut out)
        .expect("bench response fits in a frame");
    let mut decoder = FrameDecoder::new(FRAME_BODY_BYTES_MAX);
    decoder.extend(&out);
    let body = decoder
        .next_frame()
        .expect("valid frame")
        .expect("whole frame")
        .body;
    group.bench_function("multi_get_10_records_decode", |b| {
        b.iter(|| black_box(decode_response(black_box(&body)).expect("valid response")))
    });
    group.finish();
}

criterion_group!(benches, bench_requests, bench_multi_get_response);
criterion_main!(benches);
