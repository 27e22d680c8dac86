//! RTSP framing: requests (RFC 2326 §6) and interleaved binary data (§10.12)
//! on one TCP stream, with limits. Check, then parse: nothing is committed
//! to until a whole message is buffered, and a message that could never fit
//! is refused before we wait for it. Request syntax is `rtsp-types`' job;
//! this module is the only one that calls it.

use bytes::{Buf, Bytes, BytesMut};

/// Longest request line plus headers.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest body (an ANNOUNCE's SDP, a SET_PARAMETER).
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub enum Incoming {
    Request(rtsp_types::Request<Vec<u8>>),
    /// A response to a request of ours; we send none, so it is ignored.
    Response,
    /// §10.12: `$`, channel, 16-bit length, then that many bytes.
    Data {
        channel: u8,
        payload: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("request too large: {0}")]
    TooLarge(String),
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// The next whole message in `buf`, consuming it; `Ok(None)` if more bytes
/// are needed.
pub fn next(buf: &mut BytesMut) -> Result<Option<Incoming>, WireError> {
    // Some clients send bare CRLFs as keep-alives between messages.
    while buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
        buf.advance(1);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'$' {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let channel = buf[1];
        buf.advance(4);
        let payload = buf.split_to(len).freeze();
        return Ok(Some(Incoming::Data { channel, payload }));
    }
    let scan = &buf[..buf.len().min(MAX_HEAD + 4)];
    let Some(head_end) = scan
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
    else {
        if buf.len() > MAX_HEAD {
            return Err(WireError::TooLarge(format!(
                "no end of headers within {MAX_HEAD} bytes"
            )));
        }
        return Ok(None);
    };
    let head = &buf[..head_end];
    let lines = head.split(|b| *b == b'\n').count().saturating_sub(2);
    if lines > MAX_HEADERS {
        return Err(WireError::TooLarge(format!(
            "{lines} headers (at most {MAX_HEADERS})"
        )));
    }
    let body_len = content_length(head)?;
    if body_len > MAX_BODY {
        return Err(WireError::TooLarge(format!(
            "Content-Length {body_len} (at most {MAX_BODY})"
        )));
    }
    let total = head_end + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let parsed = rtsp_types::Message::<Vec<u8>>::parse(&buf[..total]);
    let msg = match parsed {
        Ok((msg, used)) if used == total => msg,
        Ok((_, used)) => {
            return Err(WireError::Malformed(format!(
                "message length {used} disagrees with its headers ({total})"
            )))
        }
        Err(e) => return Err(WireError::Malformed(e.to_string())),
    };
    buf.advance(total);
    Ok(Some(match msg {
        rtsp_types::Message::Request(r) => Incoming::Request(r),
        rtsp_types::Message::Response(_) => Incoming::Response,
        rtsp_types::Message::Data(d) => Incoming::Data {
            channel: d.channel_id(),
            payload: Bytes::from(d.into_body()),
        },
    }))
}

/// The Content-Length header's value, 0 if absent.
fn content_length(head: &[u8]) -> Result<usize, WireError> {
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if !line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        let v = std::str::from_utf8(line[colon + 1..].trim_ascii()).unwrap_or("");
        return v
            .parse()
            .map_err(|_| WireError::Malformed(format!("Content-Length `{v}` is not a number")));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &[u8]) -> (Vec<Incoming>, Option<WireError>) {
        let mut b = BytesMut::from(s);
        let mut v = Vec::new();
        loop {
            match next(&mut b) {
                Ok(Some(m)) => v.push(m),
                Ok(None) => return (v, None),
                Err(e) => return (v, Some(e)),
            }
        }
    }

    #[test]
    fn requests_and_interleaved_data() {
        let (v, e) = feed(
            b"OPTIONS rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\n\r\n\r\n$\x01\x00\x03abcSET_PARAMETER rtsp://h/a RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 4\r\n\r\nx: y",
        );
        assert!(e.is_none(), "{e:?}");
        assert_eq!(v.len(), 3);
        assert!(
            matches!(&v[0], Incoming::Request(r) if *r.method() == rtsp_types::Method::Options)
        );
        assert!(matches!(&v[1], Incoming::Data { channel: 1, payload } if &payload[..] == b"abc"));
        assert!(matches!(&v[2], Incoming::Request(r) if r.body() == b"x: y"));
    }

    #[test]
    fn incomplete_until_whole() {
        let msg = b"DESCRIBE rtsp://h/a RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 2\r\n\r\nok";
        let mut b = BytesMut::new();
        for (i, byte) in msg.iter().enumerate() {
            b.extend_from_slice(&[*byte]);
            let r = next(&mut b).unwrap();
            assert_eq!(r.is_some(), i == msg.len() - 1, "at byte {i}");
        }
    }

    #[test]
    fn limits_and_garbage() {
        let (_, e) =
            feed(b"ANNOUNCE rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n");
        assert!(matches!(e, Some(WireError::TooLarge(_))), "{e:?}");
        let (_, e) = feed(&vec![b'A'; MAX_HEAD + 10]);
        assert!(matches!(e, Some(WireError::TooLarge(_))), "{e:?}");
        let mut many = b"OPTIONS rtsp://h/a RTSP/1.0\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(feed(&many).1, Some(WireError::TooLarge(_))));
        let (_, e) = feed(b"\x16\x03\x01 not rtsp at all\r\n\r\n");
        assert!(matches!(e, Some(WireError::Malformed(_))), "{e:?}");
        let (_, e) = feed(b"OPTIONS rtsp://h/a RTSP/1.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(e, Some(WireError::Malformed(_))), "{e:?}");
    }

    #[test]
    fn replay_fuzz_corpus() {
        crate::replay_fuzz_corpus("rtsp_wire", |data| {
            let _ = feed(data);
        });
    }
}
