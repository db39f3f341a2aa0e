//! The shared pure parsers and the escaping of peer text.

use super::*;

#[test]
fn lines_are_cut_on_bytes() {
    assert_eq!(line(b"abc", 0), Ok(None));
    assert_eq!(
        line(b"a\xffc\r\r\nrest", 0),
        Ok(Some((b"a\xffc".to_vec(), 6)))
    );
    assert_eq!(line(b"\n", 0), Ok(Some((Vec::new(), 1))));
    assert_eq!(
        line(b"abc\r\n", 3),
        Ok(Some((b"abc".to_vec(), 5))),
        "the search resumes after what was seen"
    );
    let long = vec![b'2'; MAX_LINE + 1];
    assert!(matches!(line(&long, 0), Err(StartTlsError::Protocol(_))));
    assert!(matches!(
        line(&long, MAX_LINE),
        Err(StartTlsError::Protocol(_))
    ));
    let mut ended = vec![b'2'; MAX_LINE + 1];
    ended.push(b'\n');
    assert!(
        matches!(line(&ended, 0), Err(StartTlsError::Protocol(_))),
        "a line over the cap is refused even with its end in the buffer"
    );
}

/// Runs `read` over a stream whose server sends `script` in reads of `chunk` bytes.
fn over<T>(
    script: &[u8],
    chunk: usize,
    read: impl AsyncFnOnce(&mut Conversation<'_, tokio::io::Join<Drip<'_>, tokio::io::Sink>>) -> T,
) -> T {
    let mut stream = tokio::io::join(Drip(script, chunk), tokio::io::sink());
    let mut conv = Conversation::new(&mut stream);
    let mut fut = std::pin::pin!(read(&mut conv));
    let std::task::Poll::Ready(out) = fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    else {
        panic!("an always-ready stream made the conversation wait");
    };
    out
}

/// A server that sends its bytes `chunk` at a time, then closes.
struct Drip<'a>(&'a [u8], usize);

impl AsyncRead for Drip<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.1.min(self.0.len()).min(buf.remaining());
        let (now, rest) = self.0.split_at(n);
        buf.put_slice(now);
        self.0 = rest;
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn replies_need_three_digits_and_keep_their_text_as_bytes() {
    let script = b"250-mx.test\r\n250-\xff\xfe\r\n250 STARTTLS\r\nnext";
    for chunk in [1, 2, 3, 2048] {
        let (r, rest) = over(script, chunk, async |c| {
            let r = c.reply().await.unwrap();
            (r, c.buf.clone())
        });
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, [&b"mx.test"[..], b"\xff\xfe", b"STARTTLS"]);
        assert_eq!(r.text(1, b", "), r#""\xff\xfe, STARTTLS""#);
        assert!(b"next".starts_with(&rest), "{rest:?}");
    }
    assert_eq!(reply_line(b"220").unwrap(), (220, true, &b""[..]));
    assert_eq!(reply_line(b"220-x").unwrap(), (220, false, &b"x"[..]));
    for bad in [&b"+22 hi"[..], b"2\xff0 hi", b"22", b"\xe2\x82\xac0 x"] {
        let err = reply_line(bad).unwrap_err();
        assert!(
            matches!(&err, StartTlsError::Protocol(m) if m.starts_with("not a reply line: \"")),
            "{err:?}"
        );
    }
    let endless = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
    let err = over(&endless, 2048, async |c| c.reply().await.unwrap_err());
    assert!(matches!(err, StartTlsError::Protocol(_)), "{err:?}");
}

/// A long reply dripped byte by byte (each read judged on its new bytes) is read whole.
#[test]
fn a_dripped_reply_is_read_whole() {
    let mut script = b"250-".to_vec();
    script.extend(std::iter::repeat_n(b'a', MAX_LINE - 10));
    script.extend_from_slice(b"\r\n250 STARTTLS\r\n");
    let r = over(&script, 1, async |c| c.reply().await.unwrap());
    assert_eq!(r.lines.len(), 2);
    assert_eq!(resume(0, 5), 0);
    assert_eq!(resume(10, 5), 6);
}

#[test]
fn peer_text_is_a_short_escaped_prefix() {
    assert_eq!(peer_text(b"  hello \r\n"), r#""hello""#);
    assert_eq!(
        peer_text(b"\x1b[2J\x1b]0;title\x07 \"q\" \\ \xc3\xa9"),
        r#""\x1b[2J\x1b]0;title\x07 \"q\" \\ \xc3\xa9""#
    );
    let long = peer_text(&[b'a'; 500]);
    assert_eq!(long.len(), PEER_TEXT_MAX + 5, "{long}");
    assert!(long.ends_with("...\""));
    let escaped = peer_text(&[0xff; 500]);
    assert!(escaped.len() <= PEER_TEXT_MAX + 5, "{escaped}");
    assert!(escaped.starts_with(r#""\xff\xff"#));
}

#[test]
fn find_and_first_word() {
    assert_eq!(find(b"ab\xffcd", b"cd"), Some(3));
    assert_eq!(find(b"ab", b"abc"), None);
    assert_eq!(first_word(b"  OK [x] done"), (&b"OK"[..], &b"[x] done"[..]));
    assert_eq!(first_word(b""), (&b""[..], &b""[..]));
}

/// Fragments of what servers of every protocol say, mixed with bytes none of them should.
const PIECES: &[&[u8]] = &[
    b"220 mx.test ESMTP\r\n",
    b"250-",
    b"250 ",
    b"STARTTLS",
    b"\r\n",
    b"\n",
    b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
    b"a1 OK begin TLS\r\n",
    b"a1 ",
    b"+OK ",
    b"-ERR ",
    b"234 AUTH TLS ok\r\n",
    b"<stream:features>",
    b"</stream:features>",
    b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>",
    b"<proceed/>",
    b"<failure",
    b"<stream:error>",
    b"<",
    b">",
    b"\x30\x84\xff\xff\xff\xff",
    b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00",
    b"S",
    b"N",
    b"E\x00\x00\x00\x08",
    b"\xff",
    b"\xe2\x82",
    b"\x1b[2J\x1b]0;x\x07",
    b"\x00",
];

/// Whatever a server sends, in whatever pieces, every protocol's upgrade ends with a verdict
/// (no panic, no wait on an always-ready stream), and its error quotes the server only
/// escaped: no control character reaches a log line or a terminal.
#[test]
fn hostile_byte_streams_end_in_a_verdict_with_escaped_text() {
    let mut rng = fastrand::Rng::with_seed(0x7157_7a5d);
    let mut verdicts = [0usize; 2];
    for round in 0..3000 {
        let protocol = Protocol::ALL[round % Protocol::ALL.len()];
        let mut script = Vec::new();
        for _ in 0..rng.usize(0..40) {
            if rng.u8(..) < 40 {
                script.extend((0..rng.usize(1..16)).map(|_| rng.u8(..)));
            } else {
                script.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
            }
        }
        if rng.u8(..) < 8 {
            script.extend(std::iter::repeat_n(b'2', rng.usize(0..3 * MAX_LINE)));
        }
        let chunk = [1, 2, 3, 7, 64, 2048][rng.usize(..6)];
        let mut stream = tokio::io::join(Drip(&script, chunk), tokio::io::sink());
        let mut fut = std::pin::pin!(upgrade(protocol, &mut stream, "mx.test"));
        let std::task::Poll::Ready(out) = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        else {
            panic!("{protocol}: an always-ready stream made the upgrade wait");
        };
        verdicts[usize::from(out.is_err())] += 1;
        if let Err(e) = out {
            let text = e.to_string();
            assert!(
                !text.chars().any(char::is_control),
                "{protocol} on {script:?}: {text:?}"
            );
        }
    }
    // The pieces are real enough that some exchanges succeed (TLS always does).
    assert!(verdicts[0] > 3000 / Protocol::ALL.len(), "{verdicts:?}");
    assert!(verdicts[1] > 0, "{verdicts:?}");
}
