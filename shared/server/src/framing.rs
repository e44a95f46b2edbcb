//! The framing of a gRPC request body, checked as it streams in: after
//! the gRPC-web translation, before the auth layer and the services.
//!
//! A client's malformed body is the client's error: INVALID_ARGUMENT
//! with a message that says what was wrong, never INTERNAL with a
//! library's words. Refused here:
//! - a body that cannot be read, such as gRPC-web text that is not
//!   base64;
//! - a body that ends inside a frame (a truncated header or message);
//! - a compressed flag without a `grpc-encoding`, or a flag other than
//!   0 or 1;
//! - a second message where the method takes one (every method but the
//!   client-streaming ones, read from the descriptor sets).
//!
//! The size of each message is checked by the services' decoders
//! (`max_decoding_message_size`, OUT_OF_RANGE) as before.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

use twig_proto::catalogue::Catalogue;

/// Wraps each gRPC request's body in a [`FramedBody`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FramingLayer;

impl<S> tower::Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Framing { inner }
    }
}

/// The service [`FramingLayer`] puts around the auth layer and routes.
#[derive(Debug, Clone)]
pub(crate) struct Framing<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for Framing<S>
where
    S: tower::Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let rules = Rules {
            one_message: !Catalogue::get()
                .rpc(request.uri().path())
                .is_some_and(|m| m.client_streaming),
            compression: request
                .headers()
                .get("grpc-encoding")
                .is_some_and(|e| e.as_bytes() != b"identity"),
        };
        self.inner
            .call(request.map(|body| Body::new(FramedBody::new(body, rules))))
    }
}

/// What a body may contain.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// At most one message (the method is not client-streaming).
    one_message: bool,
    /// The request names a `grpc-encoding`: compressed messages may come.
    compression: bool,
}

/// Where the reader is in the stream of frames.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 5],
    /// Header bytes read of the current frame.
    header_read: usize,
    /// Message bytes still to come in the current frame.
    body_left: u64,
    /// Frames whose header has been read.
    messages: u32,
}

impl Frames {
    /// Reads `data` as the next bytes of the body.
    fn feed(&mut self, mut data: &[u8], rules: Rules) -> Result<(), Status> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.header_read);
            self.header[self.header_read..self.header_read + n].copy_from_slice(&data[..n]);
            self.header_read += n;
            data = &data[n..];
            if self.header_read < 5 {
                continue;
            }
            self.header_read = 0;
            match self.header[0] {
                0 => {}
                1 if rules.compression => {}
                1 => {
                    return Err(Status::invalid_argument(
                        "a message is marked compressed but the request names no grpc-encoding; \
                         send it uncompressed (flag 0)",
                    ));
                }
                flag => {
                    return Err(Status::invalid_argument(format!(
                        "a gRPC frame starts with flag {flag}; only 0 (plain) and 1 (compressed) exist"
                    )));
                }
            }
            self.messages += 1;
            if rules.one_message && self.messages > 1 {
                return Err(Status::invalid_argument(
                    "this method takes exactly one message, and the body carries more",
                ));
            }
            let [_, a, b, c, d] = self.header;
            self.body_left = u64::from(u32::from_be_bytes([a, b, c, d]));
        }
        Ok(())
    }

    /// The body ended: it must end between frames, and carry a message
    /// where the method takes exactly one.
    fn finish(&self, rules: Rules) -> Result<(), Status> {
        if self.header_read > 0 {
            return Err(Status::invalid_argument(format!(
                "the body ends inside a gRPC frame header ({} of 5 bytes)",
                self.header_read
            )));
        }
        if self.body_left > 0 {
            return Err(Status::invalid_argument(format!(
                "the body ends inside a message: {} of its bytes are missing",
                self.body_left
            )));
        }
        if rules.one_message && self.messages == 0 {
            return Err(Status::invalid_argument(
                "this method takes exactly one message, and the body carries none",
            ));
        }
        Ok(())
    }
}

/// A request body whose gRPC framing is checked as it is read.
pub(crate) struct FramedBody {
    inner: Body,
    rules: Rules,
    frames: Frames,
    /// A refusal was returned: nothing more is read.
    failed: bool,
}

impl FramedBody {
    fn new(inner: Body, rules: Rules) -> Self {
        Self {
            inner,
            rules,
            frames: Frames::default(),
            failed: false,
        }
    }
}

impl HttpBody for FramedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        let outcome = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) => this.frames.feed(data, this.rules).map(|()| Some(frame)),
                None => Ok(Some(frame)),
            },
            // The client went away: nothing to tell it.
            Some(Err(status)) if status.code() == tonic::Code::Cancelled => Err(status),
            Some(Err(_)) => Err(Status::invalid_argument(
                "the request body could not be read as gRPC frames \
                 (gRPC-web text mode takes standard base64 of whole frames)",
            )),
            None => this.frames.finish(this.rules).map(|()| None),
        };
        match outcome {
            Ok(frame) => Poll::Ready(frame.map(Ok)),
            Err(status) => {
                this.failed = true;
                Poll::Ready(Some(Err(status)))
            }
        }
    }

    /// Not before the end has been read: an empty body must still be
    /// checked (a method that takes one message gets none).
    fn is_end_stream(&self) -> bool {
        self.failed
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNARY: Rules = Rules {
        one_message: true,
        compression: false,
    };
    const STREAMING: Rules = Rules {
        one_message: false,
        compression: false,
    };

    fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(message.len() as u32).to_be_bytes());
        f.extend_from_slice(message);
        f
    }

    fn check(body: &[u8], rules: Rules, chunk: usize) -> Result<(), Status> {
        let mut frames = Frames::default();
        for part in body.chunks(chunk.max(1)) {
            frames.feed(part, rules)?;
        }
        frames.finish(rules)
    }

    #[test]
    fn whole_frames_pass_in_any_chunking() {
        let one = frame(0, b"hello");
        let two = [frame(0, b"a"), frame(0, b"")].concat();
        for chunk in [1, 2, 3, 5, 7, 64] {
            check(&one, UNARY, chunk).unwrap();
            check(&[], STREAMING, chunk).unwrap();
            check(&two, STREAMING, chunk).unwrap();
        }
    }

    #[test]
    fn malformed_bodies_are_invalid_argument() {
        let one = frame(0, b"hello");
        let cases: [(Vec<u8>, Rules, &str); 7] = [
            (Vec::new(), UNARY, "carries none"),
            (one[..3].to_vec(), UNARY, "frame header"),
            (one[..7].to_vec(), UNARY, "inside a message"),
            (frame(1, b"x"), UNARY, "no grpc-encoding"),
            (frame(7, b"x"), UNARY, "flag 7"),
            (
                [frame(0, b"a"), frame(0, b"b")].concat(),
                UNARY,
                "exactly one message",
            ),
            (
                [frame(0, b"a"), vec![0, 0]].concat(),
                STREAMING,
                "frame header",
            ),
        ];
        for (body, rules, says) in cases {
            for chunk in [1, 4, 100] {
                let refused = check(&body, rules, chunk).unwrap_err();
                assert_eq!(refused.code(), tonic::Code::InvalidArgument);
                assert!(refused.message().contains(says), "{says}: {refused:?}");
            }
        }
    }

    #[test]
    fn compressed_frames_pass_when_an_encoding_is_named() {
        let rules = Rules {
            one_message: true,
            compression: true,
        };
        check(&frame(1, b"zz"), rules, 2).unwrap();
    }
}
