//! Reading a server's whole answer to one command: OK, ERR, result sets
//! (text or binary rows, several with MULTI_RESULTS), and the answer to
//! COM_STMT_PREPARE. Capabilities turnout negotiates leave out deprecated
//! EOF, so result sets always end in EOF packets.

use super::packet::{err_text, PacketError, Packets};

/// More result sets follow this one.
const MORE_RESULTS: u16 = 0x0008;
/// A cursor was opened: no rows follow the column definitions.
const CURSOR_EXISTS: u16 = 0x0040;
/// The session is inside a transaction.
pub const IN_TRANS: u16 = 0x0001;

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
    /// Server status flags of the last OK or EOF.
    pub status: u16,
    pub affected: u64,
    pub insert_id: u64,
    /// COM_STMT_PREPARE: the statement's id and its parameter count.
    pub statement: Option<(u32, u16)>,
    /// Where the last OK packet is in `packets` (its status can be patched).
    ok_at: Option<usize>,
}

impl Answer {
    /// The packets as bytes, ready to relay.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in &self.packets {
            out.extend_from_slice(&super::packet::encode(*seq, p).0);
        }
        out
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

/// Reads one whole answer of the `expect` kind.
pub async fn read(src: &mut Packets, expect: Expect) -> Result<Answer, PacketError> {
    let mut a = Answer::default();
    loop {
        let (seq, first) = src.read().await?;
        let tag = first.first().copied();
        match tag {
            Some(0xFF) => {
                a.error.get_or_insert_with(|| err_text(&first));
                a.packets.push((seq, first));
                return Ok(a);
            }
            Some(0x00) if expect == Expect::Prepare => {
                let id = first
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                let cols = first
                    .get(5..7)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                let params = first
                    .get(7..9)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                a.statement = Some((id, params));
                a.packets.push((seq, first));
                for count in [params, cols] {
                    if count > 0 {
                        for _ in 0..=count {
                            a.packets.push(src.read().await?);
                        }
                    }
                }
                return Ok(a);
            }
            Some(0x00) => {
                let body = &first[1..];
                if let Some((affected, n)) = lenenc(body) {
                    a.affected = affected;
                    if let Some((id, _)) = lenenc(&body[n..]) {
                        a.insert_id = id;
                    }
                }
                a.status = ok_status_offset(&first)
                    .map(|at| u16::from_le_bytes([first[at], first[at + 1]]))
                    .unwrap_or(0);
                a.ok_at = Some(a.packets.len());
                a.packets.push((seq, first));
                if a.status & MORE_RESULTS == 0 {
                    return Ok(a);
                }
            }
            Some(0xFB) => {
                // LOCAL INFILE is never offered; a server asking anyway is
                // answered with an empty file.
                a.error
                    .get_or_insert_with(|| "LOCAL INFILE is not available through turnout".into());
                a.packets.push((seq, first));
                src.write(seq.wrapping_add(1), &[]).await?;
            }
            _ => {
                let (columns, _) = lenenc(&first).unwrap_or((0, 1));
                a.packets.push((seq, first));
                for _ in 0..columns {
                    a.packets.push(src.read().await?);
                }
                let (s, eof) = src.read().await?;
                let status = eof_status(&eof);
                a.packets.push((s, eof));
                if status & CURSOR_EXISTS != 0 {
                    a.status = status;
                    return Ok(a);
                }
                loop {
                    let (s, row) = src.read().await?;
                    if row.first() == Some(&0xFF) {
                        a.error.get_or_insert_with(|| err_text(&row));
                        a.packets.push((s, row));
                        return Ok(a);
                    }
                    if is_eof(&row) {
                        a.status = eof_status(&row);
                        a.packets.push((s, row));
                        break;
                    }
                    a.packets.push((s, row));
                }
                if a.status & MORE_RESULTS == 0 {
                    return Ok(a);
                }
            }
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
