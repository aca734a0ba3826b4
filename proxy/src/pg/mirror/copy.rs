//! COPY FROM STDIN: started on both sides, data to both.

use super::{
    copy_fail, error_message, no_error, query, Collected, MirrorSession, Step, Stop, OUT_CHUNK,
};
use crate::engine::Classification;
use crate::pg::codec;
use crate::pg::framed::FramedError;
use bytes::{Bytes, BytesMut};
impl MirrorSession<'_> {
    /// COPY FROM STDIN that only the authority runs: the client's data goes
    /// to it until CopyDone or CopyFail.
    pub(super) async fn copy_in_authority(&mut self) -> Step {
        loop {
            let f = self.client.read().await.map_err(Stop::Client)?;
            match f.tag {
                b'd' | b'c' | b'f' => {
                    self.send_auth(&f.raw).await.map_err(Stop::Authority)?;
                    if f.tag != b'd' {
                        return Ok(());
                    }
                }
                b'H' | b'S' => {}
                other => {
                    let reason = format!(
                        "unexpected message type {} during COPY",
                        codec::tag_name(other)
                    );
                    self.auth
                        .send(&copy_fail(&reason))
                        .await
                        .map_err(Stop::Authority)?;
                    return Ok(());
                }
            }
        }
    }

    /// COPY ... FROM STDIN: started on both sides, data to both, then the
    /// usual commit order.
    pub(super) async fn copy_statement(&mut self, unit: &[u8], class: &Classification) -> Step {
        if self.status == b'E' {
            self.send_auth(unit).await.map_err(Stop::Authority)?;
            self.relay_authority().await?;
            return Ok(());
        }
        let wrap = self.status == b'I';
        let begin = query("BEGIN");
        let mut msgs = BytesMut::new();
        if wrap {
            msgs.extend_from_slice(&begin);
        }
        msgs.extend_from_slice(unit);
        self.send_auth(&msgs).await.map_err(Stop::Authority)?;
        if wrap {
            self.collect_authority().await?;
        }
        // The authority answers CopyInResponse, or an error and ReadyForQuery.
        let mut early = Vec::new();
        loop {
            let f = self.auth.read().await.map_err(Stop::Authority)?;
            match f.tag {
                b'G' => {
                    early.push(f);
                    break;
                }
                b'Z' => {
                    self.note_status(f.body().first().copied().unwrap_or(b'I'));
                    early.push(f);
                    let c = Collected {
                        frames: early,
                        error: Some(String::new()),
                        status: self.status,
                    };
                    return self.relay_failure(&c, wrap).await;
                }
                _ => early.push(f),
            }
        }
        // Start the same COPY on the mirror.
        let mut mirror_ok = self.start_mirror_copy(unit, wrap).await;
        if mirror_ok.is_err() && wrap && self.mirror.is_some() {
            // Close the mirror's half-started transaction.
            let _ = self.on_mirror(&query("ROLLBACK"), 1, false).await;
        }
        if let Err(detail) = &mirror_ok {
            if self.mirror_failed(class, detail, unit) {
                // Abandon the COPY on the authority too.
                self.auth
                    .send(&copy_fail("turnout: mirror refused the COPY"))
                    .await
                    .map_err(Stop::Authority)?;
                self.collect_authority().await?;
                return self.fail_write(wrap, detail).await;
            }
        }
        for f in &early {
            self.queue(&f.raw);
        }
        self.flush_client().await?;
        // Data from the client to both sides (to the async queue in chunks).
        let mut chunk = BytesMut::new();
        loop {
            let f = self.client.read().await.map_err(Stop::Client)?;
            match f.tag {
                b'd' | b'c' | b'f' => {
                    self.send_auth(&f.raw).await.map_err(Stop::Authority)?;
                    if mirror_ok.is_ok() && self.async_mirror.is_some() {
                        chunk.extend_from_slice(&f.raw);
                        if chunk.len() >= OUT_CHUNK || f.tag != b'd' {
                            self.enqueue_more(chunk.split().freeze()).await;
                        }
                    } else if mirror_ok.is_ok() {
                        if let Some(m) = self.mirror.as_mut() {
                            if let Err(e) = m.send(&f.raw).await {
                                mirror_ok = Err(format!("connection lost during COPY: {e}"));
                                self.mirror = None;
                            }
                        }
                    }
                    if f.tag != b'd' {
                        break;
                    }
                }
                // Flush and Sync are ignored in COPY mode, as the server does.
                b'H' | b'S' => {}
                other => {
                    let reason = format!(
                        "unexpected message type {} during COPY",
                        codec::tag_name(other)
                    );
                    let fail = copy_fail(&reason);
                    self.send_auth(&fail).await.map_err(Stop::Authority)?;
                    if self.async_mirror.is_some() {
                        chunk.extend_from_slice(&fail);
                        self.enqueue_more(chunk.split().freeze()).await;
                    } else if let Some(m) = self.mirror.as_mut() {
                        let _ = m.send(&fail).await;
                    }
                    break;
                }
            }
        }
        let result = self.collect_authority().await?;
        let mirror_result = match mirror_ok {
            Ok(()) => {
                let commit = if wrap { query("COMMIT") } else { Bytes::new() };
                self.on_mirror(&commit, if wrap { 2 } else { 1 }, false)
                    .await
                    .and_then(no_error)
            }
            Err(e) => Err(e),
        };
        if result.error.is_some() {
            return self.relay_failure(&result, wrap).await;
        }
        if let Err(detail) = mirror_result {
            if self.mirror_failed(class, &detail, unit) {
                return self.fail_write(wrap, &detail).await;
            }
        }
        self.finish_write(&result, wrap, class).await
    }

    /// Sends `unit` (a COPY FROM STDIN) to the mirror, wrapped when asked, and
    /// waits for its CopyInResponse.
    pub(super) async fn start_mirror_copy(
        &mut self,
        unit: &[u8],
        wrap: bool,
    ) -> Result<(), String> {
        // Answers to deferred statements come first on the mirror's connection.
        self.drain_mirror(true).await;
        if wrap {
            self.on_mirror(&query("BEGIN"), 1, true)
                .await
                .and_then(no_error)?;
        }
        if self.async_mirror.is_some() {
            // Its answers are read with the COPY's end.
            self.enqueue(unit, 0, false).await;
            return Ok(());
        }
        let Some(m) = self.mirror.as_mut() else {
            return Err(format!("no connection to {}", self.mirror_side));
        };
        let started = async {
            m.send(unit).await?;
            loop {
                let f = m.read().await?;
                match f.tag {
                    b'G' => return Ok(Ok(())),
                    b'E' => {
                        let msg = error_message(&f);
                        // Drain to ReadyForQuery.
                        while m.read().await?.tag != b'Z' {}
                        return Ok(Err(msg));
                    }
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(self.shared.mirror_timeout, started).await {
            Ok(Ok(r)) => r,
            Ok(Err::<_, FramedError>(e)) => {
                self.mirror = None;
                Err(format!("connection to {} lost: {e}", self.mirror_side))
            }
            Err(_) => {
                self.mirror = None;
                Err(format!(
                    "{} did not start the COPY in time",
                    self.mirror_side
                ))
            }
        }
    }
}
