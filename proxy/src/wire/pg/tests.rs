use super::*;
use proptest::prelude::*;

fn scan_all(chunks: &[Vec<u8>], max: usize) -> Result<(Vec<(u8, usize)>, usize), CodecError> {
    let mut scanner = FrameScanner::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut forwarded = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let n = scanner.scan(&buf, max, |f| {
            frames.push((f.tag, f.len));
            Ok::<(), CodecError>(())
        })?;
        forwarded += n;
        buf.drain(..n);
        // Nothing is held back but an incomplete small frame or header.
        assert!(buf.len() <= STREAM_THRESHOLD);
    }
    Ok((frames, forwarded))
}

fn encode(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, body) in frames {
        out.push(*tag);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever bytes arrive, in whatever pieces: no panic, and no more is
    /// forwarded than arrived.
    #[test]
    fn scanner_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let chunks = split(&bytes, &cuts);
        if let Ok((_, forwarded)) = scan_all(&chunks, 1 << 20) {
            prop_assert!(forwarded <= bytes.len());
        }
    }

    /// Well-formed frames are found exactly, however the stream is cut.
    #[test]
    fn scanner_finds_every_frame(frames in proptest::collection::vec(
                                     (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
                                 cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let bytes = encode(&frames);
        let (seen, forwarded) = scan_all(&split(&bytes, &cuts), 1 << 20).unwrap();
        prop_assert_eq!(forwarded, bytes.len());
        let expected: Vec<(u8, usize)> = frames.iter().map(|(t, b)| (*t, b.len() + 5)).collect();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn startup_parser_survives_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_startup(&body);
    }

    #[test]
    fn startup_parser_reads_what_was_written(params in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,20}", 0..6)) {
        let mut params = params;
        params.insert("user".into(), "someone".into());
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let msg = startup_message(&pairs);
        let len = startup_len([msg[0], msg[1], msg[2], msg[3]]).unwrap();
        prop_assert_eq!(len, msg.len());
        match parse_startup(&msg[4..]).unwrap() {
            Startup::Protocol { minor, params: got, unsupported } => {
                prop_assert_eq!(minor, 0);
                prop_assert!(unsupported.is_empty());
                prop_assert_eq!(got, params);
            }
            other => prop_assert!(false, "parsed as {:?}", other),
        }
    }

    #[test]
    fn error_fields_survive_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = error_fields(&body);
    }
}

#[test]
fn large_frames_stream_through_in_pieces() {
    let body = vec![7u8; STREAM_THRESHOLD * 3];
    let bytes = encode(&[(b'd', body), (b'c', vec![])]);
    let chunks: Vec<Vec<u8>> = bytes.chunks(10_000).map(|c| c.to_vec()).collect();
    let (seen, forwarded) = scan_all(&chunks, usize::MAX).unwrap();
    assert_eq!(forwarded, bytes.len());
    assert_eq!(seen, vec![(b'd', STREAM_THRESHOLD * 3 + 5), (b'c', 5)]);
}

#[test]
fn oversized_and_short_lengths_are_errors() {
    let huge = [&b"Q"[..], &0x7fff_ffffu32.to_be_bytes()].concat();
    assert!(matches!(
        scan_all(&[huge], 1 << 20),
        Err(CodecError::TooLarge { .. })
    ));
    let short = [&b"Q"[..], &3u32.to_be_bytes()].concat();
    assert!(matches!(
        scan_all(&[short], 1 << 20),
        Err(CodecError::BadLength { len: 3, .. })
    ));
}

#[test]
fn special_requests_are_recognised() {
    assert_eq!(parse_startup(&SSL_REQUEST.to_be_bytes()), Ok(Startup::Ssl));
    assert_eq!(
        parse_startup(&GSSENC_REQUEST.to_be_bytes()),
        Ok(Startup::GssEnc)
    );
    let cancel = cancel_request(42, -7);
    assert_eq!(
        parse_startup(&cancel[4..]),
        Ok(Startup::Cancel {
            pid: 42,
            secret: -7
        })
    );
    assert!(startup_len(0x7fff_ffffu32.to_be_bytes()).is_err());
    assert!(startup_len(3u32.to_be_bytes()).is_err());
}
