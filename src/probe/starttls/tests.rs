//! The shared pure parsers and the escaping of peer text.

use super::*;

#[test]
fn lines_are_cut_on_bytes() {
    assert_eq!(line(b"abc"), Ok(None));
    assert_eq!(line(b"a\xffc\r\r\nrest"), Ok(Some((b"a\xffc".to_vec(), 6))));
    assert_eq!(line(b"\n"), Ok(Some((Vec::new(), 1))));
    let long = vec![b'2'; MAX_LINE + 1];
    assert!(matches!(line(&long), Err(StartTlsError::Protocol(_))));
    let mut ended = vec![b'2'; MAX_LINE + 1];
    ended.push(b'\n');
    assert!(
        matches!(line(&ended), Err(StartTlsError::Protocol(_))),
        "a line over the cap is refused even with its end in the buffer"
    );
}

#[test]
fn replies_need_three_digits_and_keep_their_text_as_bytes() {
    let (r, used) = reply(b"250-mx.test\r\n250-\xff\xfe\r\n250 STARTTLS\r\nnext")
        .unwrap()
        .unwrap();
    assert_eq!(used, 35);
    assert_eq!(r.code, 250);
    assert_eq!(r.lines, [&b"mx.test"[..], b"\xff\xfe", b"STARTTLS"]);
    assert_eq!(r.text(1, b", "), r#""\xff\xfe, STARTTLS""#);
    assert_eq!(reply(b"250-mx.test\r\n250 STA"), Ok(None));
    assert_eq!(reply(b"220\r\n").unwrap().unwrap().0.lines, [b""]);
    for bad in [
        &b"+22 hi\r\n"[..],
        b"2\xff0 hi\r\n",
        b"22\r\n",
        b"\xe2\x82\xac0 x\r\n",
    ] {
        let err = reply(bad).unwrap_err();
        assert!(
            matches!(&err, StartTlsError::Protocol(m) if m.starts_with("not a reply line: \"")),
            "{err:?}"
        );
    }
    let endless = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
    assert!(matches!(reply(&endless), Err(StartTlsError::Protocol(_))));
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
