//! Reading a server's whole answer to one command: OK, ERR, result sets
//! (text or binary rows, several with MULTI_RESULTS), and the answer to
//! COM_STMT_PREPARE. Capabilities turnout negotiates leave out deprecated
//! EOF, so result sets always end in EOF packets.

use super::my_packet::{err_text, PacketError, Packets};

/// More result sets follow this one.
const MORE_RESULTS: u16 = 0x0008;
/// A cursor was opened: no rows follow the column definitions.
const CURSOR_EXISTS: u16 = 0x0040;
/// The session is inside a transaction.
pub const IN_TRANS: u16 = 0x0001;
/// The session commits each statement by itself.
pub const AUTOCOMMIT: u16 = 0x0002;

/// What kind of answer a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK, ERR or result sets (COM_QUERY, COM_STMT_EXECUTE, ...).
    Result,
    /// COM_STMT_PREPARE's answer.
    Prepare,
}

/// One whole answer.
#[derive(Debug, Default)]
pub struct Answer {
    /// Each packet: its sequence number and payload.
    pub packets: Vec<(u8, Vec<u8>)>,
    /// The first ERR's text.
    pub error: Option<String>,
    /// The first ERR's error code.
    pub error_code: Option<u16>,
    /// An OK or EOF told the server's status (an ERR alone does not).
    pub status_known: bool,
    /// Server status flags of the last OK or EOF.
    pub status: u16,
    pub affected: u64,
    /// Affected rows summed over every OK of the answer (a multi-statement
    /// text has one per statement).
    pub affected_total: u64,
    pub insert_id: u64,
    /// COM_STMT_PREPARE: the statement's id and its parameter count.
    pub statement: Option<(u32, u16)>,
    /// Where the last OK packet is in `packets` (its status can be patched).
    ok_at: Option<usize>,
}

impl Answer {
    fn note_error(&mut self, p: &[u8]) {
        if self.error.is_none() {
            self.error = Some(err_text(p));
            self.error_code = p.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]]));
        }
    }

    /// The packets as bytes, ready to relay.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in &self.packets {
            out.extend_from_slice(&super::my_packet::encode(*seq, p).0);
        }
        out
    }

    /// A text result set's first value (its first row's first column, as
    /// text; `None` for SQL NULL, for no row, or for another answer).
    pub fn first_text_value(&self) -> Option<String> {
        let (columns, _) = lenenc(&self.packets.first()?.1)?;
        // The column count, the definitions, their EOF, then the rows.
        let row = &self.packets.get(usize::try_from(columns).ok()? + 2)?.1;
        if matches!(row.first(), Some(0xFE | 0xFF)) && row.len() < 9 {
            return None;
        }
        let (len, at) = lenenc(row)?;
        let bytes = row.get(at..at + usize::try_from(len).ok()?)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Clears the in-transaction flag of the final OK packet: the client
    /// sees an autocommit statement, not the transaction turnout wrapped it in.
    pub fn outside_transaction(&mut self) {
        let Some(i) = self.ok_at else { return };
        let p = &mut self.packets[i].1;
        if let Some(at) = ok_status_offset(p) {
            let status = u16::from_le_bytes([p[at], p[at + 1]]) & !IN_TRANS;
            p[at..at + 2].copy_from_slice(&status.to_le_bytes());
        }
        self.status &= !IN_TRANS;
    }
}

/// A length-encoded integer at the start of `b`: its value and size.
pub fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = match first {
        0..=0xFA => return Some((u64::from(first), 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = b.get(1..1 + n)?;
    let mut v = 0u64;
    for (i, byte) in bytes.iter().enumerate() {
        v |= u64::from(*byte) << (8 * i);
    }
    Some((v, 1 + n))
}

/// Where an OK packet's status flags are.
fn ok_status_offset(p: &[u8]) -> Option<usize> {
    let (_, a) = lenenc(p.get(1..)?)?;
    let (_, b) = lenenc(p.get(1 + a..)?)?;
    let at = 1 + a + b;
    (p.len() >= at + 2).then_some(at)
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

fn eof_status(p: &[u8]) -> u16 {
    match p {
        [_, _, _, lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
        _ => 0,
    }
}

/// Where a reader is in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The first packet of an answer (or of the next result set).
    First,
    /// COM_STMT_PREPARE: parameter and column definitions (with their
    /// EOFs) still to come.
    Definitions(u32),
    /// Column definitions still to come.
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEof,
    Rows,
}

/// Follows `packets` as a server's answer and decodes what it can (for the
/// fuzz targets: whatever the bytes, no panic); the answer read.
#[doc(hidden)]
pub fn follow_any(packets: &[&[u8]], prepare: bool) -> Answer {
    let expect = if prepare {
        Expect::Prepare
    } else {
        Expect::Result
    };
    let mut r = Reader::new(expect);
    let mut a = Answer::default();
    for (i, p) in packets.iter().enumerate() {
        let fed = r.feed(p, i);
        a.packets.push((i as u8, p.to_vec()));
        if fed == Fed::Done {
            break;
        }
    }
    a.outside_transaction();
    a
}

/// What a packet meant to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    More,
    Done,
    /// The server asks for a LOCAL INFILE: it is answered with an empty file.
    LocalInfile,
}

/// Follows an answer packet by packet, noting what the caller needs.
struct Reader {
    expect: Expect,
    stage: Stage,
    meta: Answer,
}

impl Reader {
    fn new(expect: Expect) -> Self {
        Reader {
            expect,
            stage: Stage::First,
            meta: Answer::default(),
        }
    }

    /// Takes the packet at `index` of the answer.
    fn feed(&mut self, p: &[u8], index: usize) -> Fed {
        let m = &mut self.meta;
        match self.stage {
            Stage::First => match p.first() {
                Some(0xFF) => {
                    m.note_error(p);
                    Fed::Done
                }
                Some(0x00) if self.expect == Expect::Prepare => {
                    let u16_at = |i: usize| {
                        p.get(i..i + 2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]))
                            .unwrap_or(0)
                    };
                    let id = p
                        .get(1..5)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    let (cols, params) = (u16_at(5), u16_at(7));
                    m.statement = Some((id, params));
                    let follow = [params, cols]
                        .iter()
                        .filter(|&&n| n > 0)
                        .map(|&n| u32::from(n) + 1)
                        .sum();
                    if follow == 0 {
                        return Fed::Done;
                    }
                    self.stage = Stage::Definitions(follow);
                    Fed::More
                }
                Some(0x00) => {
                    let body = &p[1..];
                    if let Some((affected, n)) = lenenc(body) {
                        m.affected = affected;
                        m.affected_total = m.affected_total.saturating_add(affected);
                        if let Some((id, _)) = lenenc(&body[n..]) {
                            m.insert_id = id;
                        }
                    }
                    if let Some(at) = ok_status_offset(p) {
                        m.status = u16::from_le_bytes([p[at], p[at + 1]]);
                        m.status_known = true;
                    }
                    m.ok_at = Some(index);
                    if m.status & MORE_RESULTS == 0 {
                        Fed::Done
                    } else {
                        Fed::More
                    }
                }
                Some(0xFB) => {
                    m.error.get_or_insert_with(|| {
                        "LOCAL INFILE is not available through turnout".into()
                    });
                    Fed::LocalInfile
                }
                _ => {
                    let (columns, _) = lenenc(p).unwrap_or((0, 1));
                    self.stage = if columns == 0 {
                        Stage::ColumnsEof
                    } else {
                        Stage::Columns(columns)
                    };
                    Fed::More
                }
            },
            Stage::Definitions(n) => {
                if n <= 1 {
                    return Fed::Done;
                }
                self.stage = Stage::Definitions(n - 1);
                Fed::More
            }
            Stage::Columns(n) => {
                self.stage = if n <= 1 {
                    Stage::ColumnsEof
                } else {
                    Stage::Columns(n - 1)
                };
                Fed::More
            }
            Stage::ColumnsEof => {
                let status = eof_status(p);
                if status & CURSOR_EXISTS != 0 {
                    m.status = status;
                    m.status_known = true;
                    return Fed::Done;
                }
                self.stage = Stage::Rows;
                Fed::More
            }
            Stage::Rows => {
                if p.first() == Some(&0xFF) {
                    m.note_error(p);
                    return Fed::Done;
                }
                if !is_eof(p) {
                    return Fed::More;
                }
                m.status = eof_status(p);
                m.status_known = true;
                if m.status & MORE_RESULTS == 0 {
                    return Fed::Done;
                }
                self.stage = Stage::First;
                Fed::More
            }
        }
    }
}

/// Reads one whole answer of the `expect` kind.
pub async fn read(src: &mut Packets, expect: Expect) -> Result<Answer, PacketError> {
    let mut r = Reader::new(expect);
    let mut packets = Vec::new();
    loop {
        let (seq, p) = src.read().await?;
        let fed = r.feed(&p, packets.len());
        packets.push((seq, p));
        match fed {
            Fed::Done => break,
            Fed::LocalInfile => {
                src.write(seq.wrapping_add(1), &[]).await?;
            }
            Fed::More => {}
        }
    }
    let mut a = r.meta;
    a.packets = packets;
    Ok(a)
}

/// Bytes of an answer gathered before they are written to the client.
const OUT_CHUNK: usize = 64 * 1024;

/// Why streaming an answer stopped.
#[derive(Debug)]
pub enum StreamError {
    /// The source failed; `sent` says whether part of the answer reached
    /// the client already.
    Source {
        error: PacketError,
        sent: bool,
    },
    Sink(std::io::Error),
}

/// Relays one answer from `src` to `out` as it comes, in chunks, without
/// holding it whole. The answer's packets are kept (for a comparison) only
/// while they add up to `keep` bytes at most; `Answer::packets` is empty
/// when they did not fit (or `keep` is 0).
pub async fn stream<W>(
    src: &mut Packets,
    expect: Expect,
    out: &mut W,
    keep: usize,
) -> Result<Answer, StreamError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut r = Reader::new(expect);
    let mut kept = Vec::new();
    let mut kept_bytes = 0usize;
    let mut keeping = keep > 0;
    let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK);
    let mut sent = false;
    let mut index = 0;
    loop {
        let (seq, p) = match src.read().await {
            Ok(x) => x,
            Err(error) => return Err(StreamError::Source { error, sent }),
        };
        let fed = r.feed(&p, index);
        index += 1;
        buf.extend_from_slice(&super::my_packet::encode(seq, &p).0);
        if keeping {
            kept_bytes += p.len();
            if kept_bytes > keep {
                keeping = false;
                kept = Vec::new();
            } else {
                kept.push((seq, p));
            }
        }
        if fed == Fed::LocalInfile {
            if let Err(error) = src.write(seq.wrapping_add(1), &[]).await {
                return Err(StreamError::Source { error, sent });
            }
        }
        if fed == Fed::Done || buf.len() >= OUT_CHUNK {
            out.write_all(&buf).await.map_err(StreamError::Sink)?;
            buf.clear();
            sent = true;
        }
        if fed == Fed::Done {
            out.flush().await.map_err(StreamError::Sink)?;
            let mut a = r.meta;
            a.packets = kept;
            if !keeping {
                a.ok_at = None;
            }
            return Ok(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_and_ok_status() {
        assert_eq!(lenenc(&[0x05]), Some((5, 1)));
        assert_eq!(lenenc(&[0xFC, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(lenenc(&[0xFC, 0x01]), None);
        assert_eq!(lenenc(&[0xFF]), None);
        let mut a = Answer {
            packets: vec![(1, vec![0x00, 1, 7, 0x03, 0x00, 0, 0])],
            ok_at: Some(0),
            status: 3,
            ..Answer::default()
        };
        a.outside_transaction();
        assert_eq!(a.packets[0].1, vec![0x00, 1, 7, 0x02, 0x00, 0, 0]);
        assert_eq!(a.status, 2);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any packets a server might send are followed without a panic,
        /// and the values of any answer decode or are refused.
        #[test]
        fn any_answer_is_followed_and_decoded_or_refused(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..12),
            prepare in any::<bool>(),
        ) {
            let packets: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
            let _ = crate::mysql::shadow::result_set(&follow_any(&packets, prepare));
        }

        #[test]
        fn handshake_responses_parse_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = mysql_common::io::ParseBuf(&bytes)
                .parse::<mysql_common::packets::HandshakeResponse<'_>>(());
            let _ = crate::mysql::kill::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
