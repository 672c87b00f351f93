//! Robustness: random and mutated frames never panic, never allocate far
//! beyond their own size, and are refused when they are not whole.
//!
//! A counting global allocator (this test binary only) tracks each thread's
//! live and peak heap bytes, so a test can measure what one decode held.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;
use crate::message::{ErrorCode, OpError, Response, ResponseBody};

struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: nothing is counted while a thread's locals are torn down.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator unchanged and only
// adds bookkeeping in const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `work` and returns its result and the most heap bytes it held
/// beyond what was live when it started (this thread only).
fn peak_bytes_of<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(start));
    let result = work();
    let peak = PEAK_BYTES.with(Cell::get);
    (result, (peak - start).max(0) as usize)
}

/// The most a decode may hold: each input byte can become at most one
/// 96-byte element (a 48-byte record, doubled by vector growth), plus
/// fixed overhead for error messages.
fn decode_bytes_bound(input_bytes: usize) -> usize {
    input_bytes * 128 + 64 * 1024
}

/// Valid inputs of every kind.
struct Corpus {
    /// Call bodies.
    bodies: Vec<Vec<u8>>,
    /// The same bodies framed, alternating header versions.
    frames: Vec<Vec<u8>>,
    /// Data and meta replies.
    replies: Vec<Vec<u8>>,
}

fn corpus() -> Corpus {
    let mut bodies = Vec::new();
    for (index, request) in every_data_request().iter().enumerate() {
        bodies.push(encode_data_call(index as i32, request, NOW).unwrap().1);
    }
    bodies.push(encode_query_config_call(1, "table"));
    bodies.push(encode_list_apps_call(2, 0));
    let mut frames = Vec::new();
    for (index, body) in bodies.iter().enumerate() {
        let header = RequestHeader {
            version: index as u32 % 2,
            app_id: 1,
            partition_index: index as i32,
            timeout_ms: 10,
            partition_hash: 99,
            is_backup_request: index % 3 == 0,
        };
        frames.push(encode_request_frame(&header, body));
    }
    let context = ReplyContext {
        app_id: 1,
        partition_index: 2,
        server: "127.0.0.1:1",
    };
    let mut replies = Vec::new();
    let responses: Vec<Response> = vec![
        Ok(ResponseBody::Done),
        Ok(ResponseBody::Value(b"value".to_vec())),
        Ok(ResponseBody::Count(3)),
        Err(OpError::new(ErrorCode::NotFound, "x")),
        Err(OpError::new(ErrorCode::NotPrimary, "x")),
    ];
    for request in every_data_request() {
        let (name, _) = encode_data_call(1, &request, NOW).unwrap();
        for response in &responses {
            if let Some(reply) = encode_data_reply(name, 5, &request, response, &context) {
                replies.push(reply);
            }
        }
    }
    let partition = PartitionConfiguration {
        app_id: 1,
        primary: Some("10.0.0.1:1".parse().unwrap()),
        secondaries: vec!["10.0.0.2:2".parse().unwrap()],
        ..PartitionConfiguration::default()
    };
    replies.push(encode_query_config_reply(
        3,
        &QueryConfigReply {
            err: "ERR_OK",
            app_id: 1,
            partition_count: 1,
            partitions: vec![partition],
        },
    ));
    let app = AppInfo {
        app_name: "t".to_string(),
        envs: vec![("k".to_string(), "v".to_string())],
        ..AppInfo::default()
    };
    replies.push(encode_list_apps_reply(4, "ERR_OK", &[app]));
    Corpus {
        bodies,
        frames,
        replies,
    }
}

/// One random change: flipped bits, an extreme i32 written somewhere, a cut,
/// a repeated slice, or inserted random bytes.
fn mutate(random: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    if bytes.is_empty() {
        return (0..random.below(64)).map(|_| random.next() as u8).collect();
    }
    for _ in 0..1 + random.below(3) {
        let at = random.below(bytes.len().max(1));
        match random.below(6) {
            0 => bytes[at] ^= 1 << random.below(8),
            1 => bytes[at] = random.next() as u8,
            2 => {
                let extremes = [i32::MAX, i32::MIN, -1, 0, 1 << 30, 0x7fff_fff0];
                let value = extremes[random.below(extremes.len())].to_be_bytes();
                for (offset, byte) in value.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + offset) {
                        *slot = *byte;
                    }
                }
            }
            3 => bytes.truncate(at),
            4 => {
                let end = (at + random.below(16)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let noise: Vec<u8> = (0..random.below(8)).map(|_| random.next() as u8).collect();
                bytes.splice(at..at, noise);
            }
        }
        if bytes.is_empty() {
            break;
        }
    }
    bytes
}

/// Decodes a body as a server would; whatever decodes must be a fixed point
/// of one more encode and decode (data requests), and no decode may hold
/// more than [`decode_bytes_bound`]. Returns whether it decoded.
fn check_body(body: &[u8]) -> bool {
    let (call, held) = peak_bytes_of(|| decode_call(body, NOW));
    assert!(
        held <= decode_bytes_bound(body.len()),
        "decoding {} bytes held {held}",
        body.len()
    );
    let _ = peek_call(body);
    let decoded = call.is_ok();
    if let Ok(Call {
        seqid,
        rpc: Rpc::Data(request),
        ..
    }) = call
    {
        let (_, again) = encode_data_call(seqid, &request, NOW).unwrap();
        let again = decode_call(&again, NOW).unwrap();
        assert_eq!(again.rpc, Rpc::Data(request));
    }
    decoded
}

#[test]
fn mutated_and_random_inputs_never_panic_and_stay_bounded() {
    // Proves, over 200,000 seeded inputs (mutated valid bodies, frames and replies, and random
    // bytes) fed to every decoder, that nothing panics, no decode holds more than
    // decode_bytes_bound(input), and every request that decodes is stable under re-encoding.
    let Corpus {
        bodies,
        frames,
        replies,
    } = corpus();
    let mut random = XorShift::new(0x5eed_7f7f_0001);
    let mut replies_accepted = 0usize;
    let mut calls_accepted = 0usize;
    for iteration in 0..200_000 {
        let pick = random.next() as usize;
        let input = match iteration % 4 {
            0 => mutate(&mut random, &bodies[pick % bodies.len()]),
            1 => mutate(&mut random, &frames[pick % frames.len()]),
            2 => mutate(&mut random, &replies[pick % replies.len()]),
            _ => (0..random.below(96)).map(|_| random.next() as u8).collect(),
        };
        calls_accepted += usize::from(check_body(&input));
        let (reply, held) = peak_bytes_of(|| decode_reply(&input));
        assert!(held <= decode_bytes_bound(input.len()));
        replies_accepted += usize::from(reply.is_ok());
        let _ = reply_frame_len(&input);

        // As a stream, in random chunks, with a frame prefix so the header is plausible.
        let mut decoder = ThftDecoder::new(1 << 20);
        let mut stream = if iteration % 2 == 0 {
            input.clone()
        } else {
            encode_request_frame(&RequestHeader::default(), &input)
        };
        stream.extend_from_slice(&input);
        let mut offset = 0;
        while offset < stream.len() {
            let chunk = (1 + random.below(64)).min(stream.len() - offset);
            decoder.read_buffer(chunk)[..chunk].copy_from_slice(&stream[offset..offset + chunk]);
            decoder.commit_read(chunk);
            offset += chunk;
            while let Ok(Some(frame)) = decoder.next_frame() {
                calls_accepted += usize::from(check_body(&frame.body));
            }
        }
        let (_, capacity) = decoder.buffer_bytes();
        assert!(capacity <= stream.len() + (2 << 20));
    }
    // The mutations are not all fatal: many calls and replies still decode,
    // so the checks above reach past the first bytes.
    assert!(calls_accepted > 10_000, "{calls_accepted}");
    assert!(replies_accepted > 1_000, "{replies_accepted}");
}

#[test]
fn every_truncation_of_a_valid_input_is_refused() {
    // Proves cutting any valid call body or reply anywhere gives an error, never a call or a
    // reply, and cutting a request frame anywhere gives no frame.
    let Corpus {
        bodies,
        frames,
        replies,
    } = corpus();
    for body in &bodies {
        assert!(decode_call(body, NOW).is_ok());
        for cut in 0..body.len() {
            assert!(
                decode_call(&body[..cut], NOW).is_err(),
                "{cut} of {body:02x?}"
            );
        }
    }
    for reply in &replies {
        assert!(decode_reply(reply).is_ok());
        for cut in 0..reply.len() {
            assert!(decode_reply(&reply[..cut]).is_err());
        }
    }
    for frame in &frames {
        for cut in 0..frame.len() {
            let mut decoder = ThftDecoder::new(1 << 20);
            decoder.extend(&frame[..cut]);
            assert_eq!(decoder.next_frame(), Ok(None));
        }
    }
}

#[test]
fn claimed_sizes_do_not_allocate() {
    // Proves headers claiming huge lists, maps, strings or bodies are refused while holding
    // only a few KiB: nothing is reserved for what has not arrived.
    let call_with = |args: &[u8]| {
        let mut body = (0x8001_0001u32 as i32).to_be_bytes().to_vec();
        body.extend_from_slice(&(RPC_MULTI_GET.len() as i32).to_be_bytes());
        body.extend_from_slice(RPC_MULTI_GET.as_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(args);
        body
    };
    let mut claims = Vec::new();
    // multi_get_request { 2: list<blob> of 2^22 elements, then 64 bytes }
    let mut list = vec![12, 0, 1, 15, 0, 2, 12];
    list.extend_from_slice(&(1i32 << 22).to_be_bytes());
    list.extend_from_slice(&[0; 64]);
    claims.push(call_with(&list));
    // ... of exactly as many 4-byte elements as fit, each claiming a huge blob.
    let mut blobs = vec![12, 0, 1, 15, 0, 2, 12];
    blobs.extend_from_slice(&16i32.to_be_bytes());
    for _ in 0..16 {
        blobs.extend_from_slice(&0x7fff_fff0i32.to_be_bytes());
    }
    claims.push(call_with(&blobs));
    // An unknown field holding a map of 2^30 entries.
    let mut map = vec![12, 0, 1, 13, 0, 99, 11, 11];
    map.extend_from_slice(&(1i32 << 30).to_be_bytes());
    claims.push(call_with(&map));
    for body in &claims {
        let (result, held) = peak_bytes_of(|| decode_call(body, NOW));
        assert_eq!(result.unwrap_err().error_name, ERR_INVALID_PARAMETERS);
        assert!(held < 16 * 1024, "held {held}");
    }
    let mut frame = encode_request_frame(&RequestHeader::default(), b"");
    frame[16..20].copy_from_slice(&(THFT_BODY_BYTES_MAX as u32).to_be_bytes());
    let (_, held) = peak_bytes_of(|| {
        let mut decoder = ThftDecoder::new(THFT_BODY_BYTES_MAX);
        decoder.extend(&frame);
        decoder.next_frame()
    });
    assert!(held <= (1 << 20) + 4096, "held {held}");
}
