//! The receive buffer behind the frame decoders ([`crate::frame::FrameDecoder`]
//! for Markab's frames, [`crate::thrift::ThftDecoder`] for Pegasus's): bytes
//! received from a stream and not yet decoded, read into in place, with
//! consumed bytes dropped from the front in bulk.

/// Once this many consumed bytes sit at the front of the buffer they are
/// dropped (the live tail is moved to the front).
pub(crate) const COMPACT_BYTES_MIN: usize = 64 * 1024;

/// Received bytes; `buffer[consumed..filled]` are not yet decoded, and the
/// bytes past `filled` are read space.
#[derive(Debug, Default)]
pub(crate) struct StreamBuffer {
    buffer: Vec<u8>,
    consumed: usize,
    filled: usize,
}

impl StreamBuffer {
    /// Bytes received and not yet consumed.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.filled - self.consumed
    }

    /// The bytes received and not yet consumed.
    pub(crate) fn live(&self) -> &[u8] {
        &self.buffer[self.consumed..self.filled]
    }

    /// Appends received bytes.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buffer.truncate(self.filled);
        self.buffer.extend_from_slice(bytes);
        self.filled = self.buffer.len();
    }

    /// A writable slice of at least `bytes_min` bytes to read into; report
    /// how many were written with [`commit_read`](StreamBuffer::commit_read).
    pub(crate) fn read_buffer(&mut self, bytes_min: usize) -> &mut [u8] {
        self.compact();
        let wanted = self.filled.saturating_add(bytes_min);
        if self.buffer.len() < wanted {
            self.buffer.resize(wanted, 0);
        }
        &mut self.buffer[self.filled..]
    }

    /// Marks `bytes` bytes of the last read buffer as received. Counts
    /// beyond that slice are clamped to it.
    pub(crate) fn commit_read(&mut self, bytes: usize) {
        self.filled = self.filled.saturating_add(bytes).min(self.buffer.len());
    }

    /// Drops the first `bytes` live bytes (at most all of them).
    pub(crate) fn consume(&mut self, bytes: usize) {
        self.consumed = self.consumed.saturating_add(bytes).min(self.filled);
    }

    /// Makes room for `bytes` more received bytes at once, rather than by
    /// repeated doubling as they arrive.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.buffer.truncate(self.filled);
        self.buffer.reserve(bytes);
    }

    /// The buffer's length and capacity (tests check what it holds).
    #[cfg(test)]
    pub(crate) fn len_and_capacity(&self) -> (usize, usize) {
        (self.buffer.len(), self.buffer.capacity())
    }

    /// Drops consumed bytes from the front once enough have piled up (or
    /// all of the buffer is consumed, which is free). The buffer keeps its
    /// length: the bytes past `filled` are read space that
    /// [`read_buffer`](StreamBuffer::read_buffer) hands out again without
    /// zeroing it (zeroing 64 KiB per socket read showed in profiles).
    fn compact(&mut self) {
        if self.consumed == 0 {
            return;
        }
        if self.consumed == self.filled {
            self.consumed = 0;
            self.filled = 0;
        } else if self.consumed >= COMPACT_BYTES_MIN {
            self.buffer.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_space_is_reused_and_consumed_bytes_are_dropped() {
        // Proves bytes read in place become live, consuming drops them, and the front is compacted.
        let mut buffer = StreamBuffer::default();
        let space = buffer.read_buffer(4);
        space[..3].copy_from_slice(b"abc");
        buffer.commit_read(3);
        assert_eq!(buffer.live(), b"abc");
        buffer.consume(1);
        assert_eq!(buffer.live(), b"bc");
        buffer.extend(b"de");
        assert_eq!(buffer.live(), b"bcde");
        buffer.consume(10);
        assert_eq!(buffer.buffered_bytes(), 0);
        // All consumed: the next read starts at the front again.
        buffer.read_buffer(1)[0] = b'z';
        buffer.commit_read(usize::MAX);
        assert_eq!(&buffer.live()[..1], b"z");
    }

    #[test]
    fn a_long_stream_keeps_the_buffer_small() {
        // Proves consumed bytes are compacted away: the buffer stays near the bound plus one chunk.
        let mut buffer = StreamBuffer::default();
        for _ in 0..10_000 {
            buffer.extend(&[7u8; 100]);
            buffer.consume(60);
            if buffer.buffered_bytes() > 1_000 {
                buffer.consume(1_000);
            }
        }
        assert!(buffer.len_and_capacity().0 <= COMPACT_BYTES_MIN + 1_100);
    }
}
