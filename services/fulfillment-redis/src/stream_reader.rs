//! A consumer's blocking reader: `XREADGROUP ... BLOCK` on a connection of its own.
//!
//! Every group reads every entry of the stream (five groups, five entries an order), so the
//! services parse far more stream entries than anything else. redis-rs's general reply parser
//! builds a value for every field of every entry on its way to our [`RawEntry`]s; at 3,000 orders/s
//! that was a quarter of the services' CPU. So on one Redis over plain TCP (the default) the
//! reader speaks the protocol itself: it sends `XREADGROUP` and parses exactly its reply (RESP2:
//! an array per stream of `[id, [field, value, ...]]`) straight into entries, one allocation per
//! field. Over TLS, a Unix socket or a Redis Cluster (which routes by slot and follows
//! redirections) it reads through redis-rs as before (`connection::StreamReader`). The same
//! connection claims (`XCLAIM ... FORCE JUSTID`) what a read took that is not pending yet, so the
//! claim never waits behind other commands.
//!
//! A read cut short (the future dropped, an I/O error, a reply it cannot parse) leaves the
//! connection in an unknown state: it is not used again, the caller opens a new one. The caller
//! gives every read its deadline ([`crate::connection::StreamReader::read`]).

use crate::stream_entry::RawEntry;
use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `XREADGROUP GROUP <group> <consumer> COUNT <count> BLOCK <block> [NOACK] STREAMS <stream>
/// <from>`.
#[derive(Debug, Clone, Copy)]
pub struct GroupRead<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
    pub count: usize,
    pub block: Duration,
    /// Read without adding the entries to the group's pending list.
    pub noack: bool,
    pub stream: &'a str,
    pub from: &'a str,
}

impl GroupRead<'_> {
    pub fn block_ms(&self) -> u64 {
        u64::try_from(self.block.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A plain TCP connection that sends `XREADGROUP` and parses its reply itself.
pub struct RawReader {
    socket: TcpStream,
    buf: Vec<u8>,
    /// Set while a command is on its way or its reply is being read: a reader dropped or failed
    /// in that window is not used again.
    in_doubt: bool,
}

/// The reply buffer starts at this size and grows for a larger batch.
const READ_CHUNK: usize = 64 * 1024;

impl RawReader {
    /// Connects to `info`'s host and port (a TCP address: the caller checked), with the TCP
    /// settings of every connection ([`crate::socket::tcp_settings`]: no delay, keepalive),
    /// and authenticates and selects the database as `info` says.
    pub async fn connect(
        host: &str,
        port: u16,
        info: &ConnectionInfo,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let socket = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io_error("connecting to Redis timed out"))??;
        crate::socket::apply_tcp_settings(&socket)?;
        let mut reader = Self {
            socket,
            buf: Vec::with_capacity(READ_CHUNK),
            in_doubt: false,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH"];
            if let Some(username) = settings.username() {
                auth.push(username);
            }
            auth.push(password);
            tokio::time::timeout(timeout, reader.simple(&auth))
                .await
                .map_err(|_| io_error("AUTH timed out"))??;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            tokio::time::timeout(timeout, reader.simple(&["SELECT", &db]))
                .await
                .map_err(|_| io_error("SELECT timed out"))??;
        }
        Ok(reader)
    }

    /// Sends a command whose reply is a status (`+OK`) or an error.
    async fn simple(&mut self, args: &[&str]) -> RedisResult<()> {
        self.send(args).await?;
        loop {
            match parse_status(&self.buf)? {
                Some(used) => {
                    self.buf.drain(..used);
                    self.in_doubt = false;
                    return Ok(());
                }
                None => self.fill().await?,
            }
        }
    }

    /// Reads the entries; none when the block timed out. An error reply keeps its code.
    pub async fn read(&mut self, read: GroupRead<'_>) -> RedisResult<Vec<RawEntry>> {
        if self.in_doubt {
            return Err(io_error("an earlier read was cut short"));
        }
        let count = read.count.to_string();
        let block = read.block_ms().to_string();
        let mut args = vec![
            "XREADGROUP",
            "GROUP",
            read.group,
            read.consumer,
            "COUNT",
            &count,
            "BLOCK",
            &block,
        ];
        if read.noack {
            args.push("NOACK");
        }
        args.extend(["STREAMS", read.stream, read.from]);
        self.send(&args).await?;
        loop {
            match parse_read_reply_or_need(&self.buf) {
                Ok(Parsed::Reply(entries, used)) => {
                    self.buf.drain(..used);
                    self.in_doubt = false;
                    return Ok(entries);
                }
                Ok(Parsed::Need(need)) => {
                    while self.buf.len() < need {
                        self.fill().await?;
                    }
                }
                // An error reply is a whole reply: the connection is still in step.
                Err(e) if e.code().is_some() => {
                    self.buf.clear();
                    self.in_doubt = false;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `XCLAIM <stream> <group> <consumer> 0 <ids> FORCE JUSTID`: the entries become pending as
    /// `consumer`'s, idle from now, whoever held them (and pending even if nobody did).
    pub async fn claim(
        &mut self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[&str],
    ) -> RedisResult<()> {
        if self.in_doubt {
            return Err(io_error("an earlier read was cut short"));
        }
        let mut args = vec!["XCLAIM", stream, group, consumer, "0"];
        args.extend_from_slice(ids);
        args.extend(["FORCE", "JUSTID"]);
        self.send(&args).await?;
        loop {
            match parse_id_list(&self.buf) {
                Ok(Some(used)) => {
                    self.buf.drain(..used);
                    self.in_doubt = false;
                    return Ok(());
                }
                Ok(None) => self.fill().await?,
                Err(e) if e.code().is_some() => {
                    self.buf.clear();
                    self.in_doubt = false;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&mut self, args: &[&str]) -> RedisResult<()> {
        self.in_doubt = true;
        self.buf.clear();
        let mut command = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        command.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            command.extend_from_slice(arg.as_bytes());
            command.extend_from_slice(b"\r\n");
        }
        self.socket.write_all(&command).await?;
        Ok(())
    }

    /// Reads more of the reply; the connection closing is an error.
    async fn fill(&mut self) -> RedisResult<()> {
        let len = self.buf.len();
        if self.buf.capacity() - len < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK.max(len));
        }
        let read = self.socket.read_buf(&mut self.buf).await?;
        if read == 0 {
            return Err(io_error("Redis closed the connection"));
        }
        Ok(())
    }
}

fn io_error(message: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, message))
}

fn protocol_error(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "unexpected reply to XREADGROUP",
        what.to_owned(),
    ))
}

/// Where a reply is in `buf`, as the parser walks it. `Ok(None)` from any step: not all there yet,
/// and `need` says how long `buf` must be before it is worth parsing again (a large value arrives
/// in many reads; parsing the reply again after each would take time quadratic in its size).
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    need: usize,
}

type Step<T> = RedisResult<Option<T>>;

impl<'a> Cursor<'a> {
    /// The next line without its `\r\n`.
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = &self.buf[self.at..];
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            self.need = self.buf.len() + 1;
            return Ok(None);
        };
        self.at += end + 2;
        Ok(Some(&rest[..end]))
    }

    /// An array's length (`*<n>`); `-1` is a nil array.
    fn array(&mut self) -> Step<i64> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        match line.split_first() {
            Some((b'*', n)) => number(n).map(Some),
            _ => Err(protocol_error("an array was expected")),
        }
    }

    /// A bulk string (`$<n>`, then `n` bytes); `$-1` is nil.
    fn bulk(&mut self) -> Step<Option<&'a [u8]>> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        let len = match line.split_first() {
            Some((b'$', n)) => number(n)?,
            _ => return Err(protocol_error("a bulk string was expected")),
        };
        if len < 0 {
            return Ok(Some(None));
        }
        let len = usize::try_from(len).map_err(|_| protocol_error("bad length"))?;
        if self.buf.len() < self.at + len + 2 {
            self.need = self.at + len + 2;
            return Ok(None);
        }
        let value = &self.buf[self.at..self.at + len];
        if &self.buf[self.at + len..self.at + len + 2] != b"\r\n" {
            return Err(protocol_error("a bulk string did not end in CRLF"));
        }
        self.at += len + 2;
        Ok(Some(Some(value)))
    }
}

fn number(digits: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| protocol_error("a length was expected"))
}

/// An error reply (`-CODE message`) as redis-rs would report it, code included.
fn server_error(line: &[u8]) -> RedisError {
    let mut framed = line.to_vec();
    framed.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&framed).and_then(|v| v.extract_error()) {
        Err(e) => e,
        Ok(_) => protocol_error("an error reply that is not one"),
    }
}

/// `+OK` (or any status): the bytes it took. An error reply is the error.
fn parse_status(buf: &[u8]) -> Step<usize> {
    let mut cursor = Cursor {
        buf,
        at: 0,
        need: 0,
    };
    let Some(line) = cursor.line()? else {
        return Ok(None);
    };
    match line.first() {
        Some(b'+') => Ok(Some(cursor.at)),
        Some(b'-') => Err(server_error(line)),
        _ => Err(protocol_error("a status was expected")),
    }
}

/// An array of bulk strings (`XCLAIM ... JUSTID`'s ids): the bytes it took. An error reply is the
/// error.
fn parse_id_list(buf: &[u8]) -> Step<usize> {
    let mut cursor = Cursor {
        buf,
        at: 0,
        need: 0,
    };
    if buf.first() == Some(&b'-') {
        return match cursor.line()? {
            Some(line) => Err(server_error(line)),
            None => Ok(None),
        };
    }
    let Some(n) = cursor.array()? else {
        return Ok(None);
    };
    for _ in 0..n.max(0) {
        if cursor.bulk()?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(cursor.at))
}

/// An `XREADGROUP`/`XREAD` reply in RESP2 and the bytes it took: a nil array when the block timed
/// out, else an array of `[stream, [[id, [field, value, ...]], ...]]`. Entries of every stream,
/// in reply order; an entry whose fields are nil (deleted while pending) has none.
pub fn parse_read_reply(buf: &[u8]) -> Step<(Vec<RawEntry>, usize)> {
    parse_read_reply_or_need(buf).map(|parsed| match parsed {
        Parsed::Reply(entries, used) => Some((entries, used)),
        Parsed::Need(_) => None,
    })
}

/// A whole reply, or how many bytes `buf` must hold before parsing again is worth it.
enum Parsed {
    Reply(Vec<RawEntry>, usize),
    Need(usize),
}

fn parse_read_reply_or_need(buf: &[u8]) -> RedisResult<Parsed> {
    let mut cursor = Cursor {
        buf,
        at: 0,
        need: 0,
    };
    match read_reply(&mut cursor)? {
        Some((entries, used)) => Ok(Parsed::Reply(entries, used)),
        None => Ok(Parsed::Need(cursor.need.max(buf.len() + 1))),
    }
}

fn read_reply(cursor: &mut Cursor<'_>) -> Step<(Vec<RawEntry>, usize)> {
    let buf = cursor.buf;
    if buf.first() == Some(&b'-') {
        return match cursor.line()? {
            Some(line) => Err(server_error(line)),
            None => Ok(None),
        };
    }
    let Some(streams) = cursor.array()? else {
        return Ok(None);
    };
    let mut entries = Vec::new();
    for _ in 0..streams.max(0) {
        match cursor.array()? {
            None => return Ok(None),
            Some(2) => {}
            Some(_) => return Err(protocol_error("a stream is [name, entries]")),
        }
        if cursor.bulk()?.is_none() {
            return Ok(None);
        }
        let Some(count) = cursor.array()? else {
            return Ok(None);
        };
        entries.reserve(usize::try_from(count).unwrap_or(0));
        for _ in 0..count.max(0) {
            let Some(parts) = cursor.array()? else {
                return Ok(None);
            };
            if parts != 2 {
                return Err(protocol_error("an entry is [id, fields]"));
            }
            let id = match cursor.bulk()? {
                None => return Ok(None),
                Some(None) => return Err(protocol_error("an entry without id")),
                Some(Some(id)) => String::from_utf8_lossy(id).into_owned(),
            };
            let Some(values) = cursor.array()? else {
                return Ok(None);
            };
            let mut fields = Vec::with_capacity(usize::try_from(values / 2).unwrap_or(0));
            for _ in 0..values.max(0) / 2 {
                let Some(name) = cursor.bulk()? else {
                    return Ok(None);
                };
                let Some(value) = cursor.bulk()? else {
                    return Ok(None);
                };
                fields.push((
                    name.unwrap_or_default().to_vec(),
                    value.unwrap_or_default().to_vec(),
                ));
            }
            entries.push(RawEntry { id, fields });
        }
    }
    Ok(Some((entries, cursor.at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", s.len()).into_bytes();
        out.extend_from_slice(s);
        out.extend_from_slice(b"\r\n");
        out
    }

    type Fields<'a> = &'a [(&'a [u8], &'a [u8])];

    fn reply(streams: &[(&str, &[(&str, Fields)])]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", streams.len()).into_bytes();
        for (stream, entries) in streams {
            out.extend_from_slice(b"*2\r\n");
            out.extend(bulk(stream.as_bytes()));
            out.extend(format!("*{}\r\n", entries.len()).into_bytes());
            for (id, fields) in *entries {
                out.extend_from_slice(b"*2\r\n");
                out.extend(bulk(id.as_bytes()));
                out.extend(format!("*{}\r\n", fields.len() * 2).into_bytes());
                for (k, v) in *fields {
                    out.extend(bulk(k));
                    out.extend(bulk(v));
                }
            }
        }
        out
    }

    #[test]
    fn a_reply_parses_into_entries_and_every_shorter_prefix_asks_for_more() {
        let binary: &[u8] = b"a\r\nb\0\xff$3\r\n";
        let bytes = reply(&[
            (
                "s",
                &[
                    ("1-0", &[(b"type", b"OrderPlaced"), (b"payload", binary)]),
                    ("2-5", &[]),
                ],
            ),
            ("t", &[("3-0", &[(b"k", b"")])]),
        ]);
        let mut with_next = bytes.clone();
        with_next.extend_from_slice(b"*-1\r\n");
        let (entries, used) = parse_read_reply(&with_next)
            .expect("parses")
            .expect("whole");
        assert_eq!(used, bytes.len());
        assert_eq!(
            entries,
            vec![
                RawEntry {
                    id: "1-0".into(),
                    fields: vec![
                        (b"type".to_vec(), b"OrderPlaced".to_vec()),
                        (b"payload".to_vec(), binary.to_vec()),
                    ],
                },
                RawEntry {
                    id: "2-5".into(),
                    fields: vec![],
                },
                RawEntry {
                    id: "3-0".into(),
                    fields: vec![(b"k".to_vec(), b"".to_vec())],
                },
            ]
        );
        for cut in 0..bytes.len() {
            assert!(
                parse_read_reply(&bytes[..cut]).expect("parses").is_none(),
                "a reply cut at {cut} of {} bytes parsed",
                bytes.len()
            );
        }
    }

    #[test]
    fn a_large_value_is_waited_for_whole_not_parsed_again_on_every_read() {
        let big = vec![b'x'; 1 << 20];
        let bytes = reply(&[("s", &[("1-0", &[(b"payload", big.as_slice())])])]);
        let header = bytes.len() - big.len() - 2;
        for cut in [header - 1, header, header + 10, bytes.len() - 1] {
            match parse_read_reply_or_need(&bytes[..cut]).expect("parses") {
                Parsed::Need(need) if cut >= header => {
                    assert_eq!(need, bytes.len(), "cut at {cut}")
                }
                Parsed::Need(need) => assert!(need > cut, "cut at {cut}"),
                Parsed::Reply(..) => panic!("a cut reply parsed"),
            }
        }
        assert!(matches!(
            parse_read_reply_or_need(&bytes).expect("parses"),
            Parsed::Reply(entries, used) if used == bytes.len() && entries[0].fields[0].1 == big
        ));
    }

    #[test]
    fn a_timed_out_block_is_no_entries() {
        assert_eq!(
            parse_read_reply(b"*-1\r\n").expect("parses"),
            Some((vec![], 5))
        );
        assert_eq!(parse_read_reply(b"*-1\r").expect("parses"), None);
    }

    #[test]
    fn a_deleted_entry_has_no_fields() {
        let bytes = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*-1\r\n";
        let (entries, _) = parse_read_reply(bytes).expect("parses").expect("whole");
        assert_eq!(
            entries,
            vec![RawEntry {
                id: "1-0".into(),
                fields: vec![]
            }]
        );
    }

    #[test]
    fn an_error_reply_keeps_its_code() {
        let e = parse_read_reply(b"-NOGROUP No such key 's' or consumer group 'g'\r\n")
            .expect_err("an error");
        assert_eq!(e.code(), Some("NOGROUP"));
        assert!(
            parse_read_reply(b"-NOGROUP No such")
                .expect("parses")
                .is_none()
        );
        assert_eq!(parse_status(b"+OK\r\n").expect("parses"), Some(5));
        assert_eq!(
            parse_status(b"-WRONGPASS invalid password\r\n")
                .expect_err("an error")
                .code(),
            Some("WRONGPASS")
        );
    }

    #[test]
    fn anything_else_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b":1\r\n"[..],
            b"*1\r\n:1\r\n",
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*3\r\n",
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$x\r\n",
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$1\r\n1-0\r\n",
            b"*1\r\n*2\r\n$1\r\nsXY",
        ] {
            assert!(
                parse_read_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
