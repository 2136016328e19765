//! Script calls committed in groups: the calls of one script that one process makes at the same
//! moment on the same hash slot go to Redis as one `EVALSHA`, which runs them one after the other
//! and answers each.
//!
//! Redis spends most of an order's time on the fixed cost of each script call (finding the
//! script, building its `KEYS` and `ARGV`, entering Lua), not on the commands inside. So each
//! batched script has a second form: its body as a function of `KEYS` and `ARGV`, and a driver
//! that calls it once per call of the batch, each under `pcall`. A queue per script and slot
//! sends whatever is waiting as one batch, with up to two batches on their way at once: one call
//! alone goes as the plain script, at once; under load, the calls that arrive while batches are
//! on their way form the next one (group commit), so a busy handler and a busy API both pay one
//! call per moment, not per event. Each call keeps its own answer and its own error; the calls of a batch run in the order
//! they were made, as pipelined calls did.

use crate::connection::Conn;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, RedisWrite, Script, ServerErrorKind,
    ToRedisArgs, Value,
};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Most calls in one batch.
const MAX_CALLS: usize = 128;
/// Most batches of one queue on their way at once. Calls in different batches were made without
/// waiting for each other, so the order between them is not a caller's; a second batch in flight
/// keeps Redis busy while the first one's answers travel back and are handed out.
const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Most bytes of keys and arguments in one batch (Redis takes far more; this keeps one batch's
/// script short, about a millisecond at most).
const MAX_BYTES: usize = 512 * 1024;

/// The globals the scripts use, as locals of the chunk: each use is then an upvalue, not a
/// lookup in the global table.
macro_rules! globals_as_locals {
    () => {
        "local redis, cjson, unpack, tonumber, tostring, type, pcall, ipairs, string, math, table =
  redis, cjson, unpack, tonumber, tostring, type, pcall, ipairs, string, math, table
"
    };
}

/// What a batched script may call besides Redis, in two forms: alone, each does its work at once;
/// in a batch, each is done once at the batch's end for all its calls (the calls' order kept):
/// - `notify(channel, message)` publishes `message` on `channel`; in a batch, every message in
///   one `PUBLISH` of a JSON array (the messages are JSON texts);
/// - `count(key, field, n)` adds `n` to a counter (`HINCRBY`); in a batch, one `HINCRBY` per
///   counter with the batch's sum;
/// - `keep_recent(list, value, keep)` pushes `value` on the list's head and keeps its first
///   `keep` (`LPUSH`, `LTRIM`); in a batch, one `LPUSH` of every value and one `LTRIM`.
///
/// A counter or list written this way is only read outside scripts. Both forms first make the
/// globals a script uses locals of the chunk (`globals_as_locals!`), so each use is an upvalue,
/// not a global lookup.
pub const PLAIN_PRELUDE: &str = concat!(
    globals_as_locals!(),
    "local function notify(channel, message) redis.call('PUBLISH', channel, message) end
local function count(key, field, n) redis.call('HINCRBY', key, field, n) end
local function keep_recent(list, value, keep)
  redis.call('LPUSH', list, value)
  redis.call('LTRIM', list, 0, keep - 1)
end
"
);
const BATCH_PRELUDE: &str = concat!(
    globals_as_locals!(),
    "local notices, notice_channel = {}, nil
local function notify(channel, message)
  notice_channel = channel
  notices[#notices + 1] = message
end
-- tables[key], made (and key recorded in order) the first time.
local function bucket(tables, order, key)
  local t = tables[key]
  if not t then
    t = {}
    tables[key] = t
    order[#order + 1] = key
  end
  return t
end
local counts, counted = {}, {}
local function count(key, field, n)
  local fields = bucket(counts, counted, key)
  if not fields[field] then
    fields[#fields + 1] = field
    fields[field] = 0
  end
  fields[field] = fields[field] + n
end
local recents, recent_lists = {}, {}
local function keep_recent(list, value, keep)
  local values = bucket(recents, recent_lists, list)
  values[#values + 1] = value
  values.keep = keep
end
"
);

/// Runs the script above it (as `run`) once per call. ARGV[1] calls, then each call's key count
/// and argument count; then the calls' keys (in KEYS) and arguments (in ARGV), in order. Each
/// call's keys and arguments are copied by `unpack` into a table constructor (in C), not element
/// by element in Lua: a batch passes a few hundred arguments per order.
const DRIVER: &str = r#"
local KEYS, ARGV = KEYS, ARGV
local calls = tonumber(ARGV[1])
local results = {}
local k, a = 1, 2 + 2 * calls
for i = 1, calls do
  local nk, na = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local keys, args = {unpack(KEYS, k, k + nk - 1)}, {unpack(ARGV, a, a + na - 1)}
  k, a = k + nk, a + na
  local ok, result = pcall(run, keys, args)
  if ok then
    results[i] = {1, result}
  else
    if type(result) == 'table' and result.err then result = result.err end
    results[i] = {0, tostring(result)}
  end
end
for _, key in ipairs(counted) do
  local fields = counts[key]
  for _, field in ipairs(fields) do redis.call('HINCRBY', key, field, fields[field]) end
end
for _, list in ipairs(recent_lists) do
  local values = recents[list]
  redis.call('LPUSH', list, unpack(values))
  redis.call('LTRIM', list, 0, values.keep - 1)
end
if notice_channel then
  redis.call('PUBLISH', notice_channel, '[' .. table.concat(notices, ',') .. ']')
end
return results
"#;

/// A script that can be called in groups.
pub struct BatchedScript {
    name: &'static str,
    plain: Script,
    batched: Script,
}

impl std::fmt::Debug for BatchedScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedScript")
            .field("name", &self.name)
            .finish()
    }
}

impl BatchedScript {
    /// `source` is a script of `KEYS` and `ARGV` ending in `return`: it must not assign to
    /// `KEYS` or `ARGV` (they become the function's parameters). It may call `notify`, `count`
    /// and `keep_recent` (see [`PLAIN_PRELUDE`]).
    pub fn new(name: &'static str, source: &str) -> Self {
        Self::with_library(name, "", source)
    }

    /// Like [`BatchedScript::new`], with `library` (local functions the script calls, defined
    /// once per `EVALSHA`, not once per call) ahead of it.
    pub fn with_library(name: &'static str, library: &str, source: &str) -> Self {
        Self {
            name,
            plain: Script::new(&format!("{PLAIN_PRELUDE}{library}\n{source}")),
            batched: Script::new(&format!(
                "{BATCH_PRELUDE}{library}\nlocal function run(KEYS, ARGV)\n{source}\nend\n{DRIVER}"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One call's keys and arguments.
#[derive(Debug, Default, Clone)]
pub struct ScriptCall {
    keys: Flat,
    args: Flat,
}

impl ScriptCall {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn size(&self) -> usize {
        self.keys.data.len() + self.args.data.len()
    }
}

/// Arguments one after the other in one buffer: a call passes dozens of them, and one
/// allocation per argument (then another copy into the command) was a good part of the services'
/// allocations.
#[derive(Debug, Default, Clone)]
struct Flat {
    data: Vec<u8>,
    /// Where each argument ends in `data`.
    ends: Vec<usize>,
}

impl Flat {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.data[start..end])
    }
}

impl RedisWrite for Flat {
    fn write_arg(&mut self, arg: &[u8]) {
        self.data.extend_from_slice(arg);
        self.ends.push(self.data.len());
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        /// Ends the argument when the writer is dropped.
        struct Next<'a>(&'a mut Flat);
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                self.0.ends.push(self.0.data.len());
            }
        }
        impl std::io::Write for Next<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.data.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        Next(self)
    }
}

/// A call waiting in a queue, with where its answer goes.
struct Queued {
    call: ScriptCall,
    answer: oneshot::Sender<RedisResult<Value>>,
}

/// The queues of one process (one per script and slot), and the connection they send on.
#[derive(Default)]
pub struct Batches {
    queues: Mutex<HashMap<(&'static str, String), mpsc::UnboundedSender<Queued>>>,
}

impl Batches {
    pub fn new() -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `call` of `script` on `slot` (the hash tag, or any name shared by exactly the calls
    /// whose keys are on one slot) and waits for its answer.
    pub async fn run<T: FromRedisValue>(
        &self,
        conn: impl FnOnce() -> Conn,
        script: &'static BatchedScript,
        slot: &str,
        call: ScriptCall,
    ) -> RedisResult<T> {
        let (answer, answered) = oneshot::channel();
        self.queue(conn, script, slot)
            .send(Queued { call, answer })
            .map_err(|_| stopped())?;
        let value = answered.await.map_err(|_| stopped())??;
        T::from_redis_value(value).map_err(RedisError::from)
    }

    fn queue(
        &self,
        conn: impl FnOnce() -> Conn,
        script: &'static BatchedScript,
        slot: &str,
    ) -> mpsc::UnboundedSender<Queued> {
        let key = (script.name, slot.to_owned());
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = queues.get(&key)
            && !sender.is_closed()
        {
            return sender.clone();
        }
        let (sender, calls) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(conn(), script, calls));
        queues.insert(key, sender.clone());
        sender
    }
}

/// Sends whatever is queued, up to [`MAX_BATCHES_IN_FLIGHT`] batches at a time, until the
/// process ends.
async fn send_batches(
    conn: Conn,
    script: &'static BatchedScript,
    mut calls: mpsc::UnboundedReceiver<Queued>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = calls.recv(), if in_flight.len() < MAX_BATCHES_IN_FLIGHT => {
                let Some(first) = first else { break };
                let batch = gather(first, &mut calls);
                in_flight.push(send_batch(conn.clone(), script, batch));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// `first` and whatever else is waiting, up to the bounds of one batch.
fn gather(first: Queued, calls: &mut mpsc::UnboundedReceiver<Queued>) -> Vec<Queued> {
    let mut bytes = first.call.size();
    let mut batch = vec![first];
    while batch.len() < MAX_CALLS && bytes < MAX_BYTES {
        match calls.try_recv() {
            Ok(next) => {
                bytes += next.call.size();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Runs one batch (one call alone as the plain script) and answers each of its calls.
async fn send_batch(mut conn: Conn, script: &'static BatchedScript, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let Queued { call, answer } = batch.remove(0);
        let mut cmd = evalsha(&script.plain, call.keys.len());
        for part in call.keys.iter().chain(call.args.iter()) {
            cmd.arg(part);
        }
        let _ = answer.send(invoke(&mut conn, &script.plain, &cmd).await);
        return;
    }
    let mut cmd = evalsha(
        &script.batched,
        batch.iter().map(|q| q.call.keys.len()).sum(),
    );
    for queued in &batch {
        for key in queued.call.keys.iter() {
            cmd.arg(key);
        }
    }
    cmd.arg(batch.len());
    for queued in &batch {
        cmd.arg(queued.call.keys.len()).arg(queued.call.args.len());
    }
    for queued in &batch {
        for arg in queued.call.args.iter() {
            cmd.arg(arg);
        }
    }
    let results = invoke(&mut conn, &script.batched, &cmd)
        .await
        .and_then(|v| Vec::<Value>::from_redis_value(v).map_err(RedisError::from));
    match results {
        Ok(results) if results.len() == batch.len() => {
            for (queued, result) in batch.into_iter().zip(results) {
                let _ = queued.answer.send(answer_of(script, result));
            }
        }
        Ok(results) => {
            let e = RedisError::from((
                ErrorKind::Parse,
                "batch answered the wrong number of calls",
                format!("{}: {} of {}", script.name, results.len(), batch.len()),
            ));
            for queued in batch {
                let _ = queued.answer.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for queued in batch {
                let _ = queued.answer.send(Err(e.clone()));
            }
        }
    }
}

/// `EVALSHA <script> <keys>`, its keys and arguments to follow.
fn evalsha(script: &Script, keys: usize) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs `cmd` (an `EVALSHA` of `script`); when Redis does not have the script (a restart, a
/// failover, `SCRIPT FLUSH`), loads it and runs it again, as redis-rs's invocations do.
async fn invoke(conn: &mut Conn, script: &Script, cmd: &Cmd) -> RedisResult<Value> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        result => result,
    }
}

/// One call's answer in a batch: `{1, result}` or `{0, error}`.
fn answer_of(script: &BatchedScript, result: Value) -> RedisResult<Value> {
    let Value::Array(mut pair) = result else {
        return Err(RedisError::from((
            ErrorKind::Parse,
            "a batched call's answer is not a pair",
            script.name.to_owned(),
        )));
    };
    let value = if pair.len() > 1 {
        pair.swap_remove(1)
    } else {
        Value::Nil
    };
    match pair.first() {
        Some(Value::Int(1)) => Ok(value),
        _ => Err(RedisError::from((
            ErrorKind::Extension,
            "script error",
            format!(
                "{}: {}",
                script.name,
                String::from_redis_value(value).unwrap_or_default()
            ),
        ))),
    }
}

fn stopped() -> RedisError {
    RedisError::from((ErrorKind::Io, "the script batch queue stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_becomes_a_function_of_its_keys_and_arguments() {
        let script = BatchedScript::new("echo", "return {KEYS[1], ARGV[1]}");
        assert_eq!(script.name(), "echo");
        let call = {
            let mut c = ScriptCall::new();
            c.key("k").arg("a").arg(3);
            c
        };
        assert_eq!(call.size(), 3);
        assert!(answer_of(&script, Value::Array(vec![Value::Int(1), Value::Int(7)])).is_ok());
        let failed = answer_of(
            &script,
            Value::Array(vec![Value::Int(0), Value::BulkString(b"boom".to_vec())]),
        )
        .expect_err("an error");
        assert!(failed.to_string().contains("echo: boom"), "{failed}");
    }

    #[test]
    fn arguments_keep_their_bounds_in_one_buffer() {
        let mut call = ScriptCall::new();
        call.key("k")
            .arg("")
            .arg(&["a", "bc"][..])
            .arg(42)
            .arg(b"\0\r\n".as_slice());
        {
            use std::io::Write;
            let mut next = call.args.writer_for_next_arg();
            next.write_all(b"wr").expect("writes");
            next.write_all(b"itten").expect("writes");
        }
        assert_eq!(call.keys.iter().collect::<Vec<_>>(), vec![b"k".as_slice()]);
        assert_eq!(
            call.args.iter().collect::<Vec<_>>(),
            vec![b"".as_slice(), b"a", b"bc", b"42", b"\0\r\n", b"written"]
        );
        assert_eq!(
            (call.keys.len(), call.args.len(), call.size()),
            (1, 6, 1 + 15)
        );
    }
}
