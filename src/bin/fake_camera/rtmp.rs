//! A small RTMP server for the fake camera (`--serve rtmp`), as Reolink's cameras have one:
//! `rtmp://<address>:<port>/bcs/channel0_main.bcs?channel=0&stream=0&user=U&password=P`.
//!
//! Our own rather than nginx-rtmp: the camera is the server, so stopping, freezing or
//! restarting the fake camera does to Vigil what a real camera's reboot does (with a relay in
//! between, Vigil would stay connected to the relay), and the login is checked the way Reolink
//! checks it, in the play request's query string. GStreamer has an RTMP client (`rtmp2src`,
//! `rtmp2sink`) but no server.
//!
//! It speaks what a player needs and no more: the plain handshake, chunking both ways, and the
//! AMF0 commands `connect`, `createStream` and `play` (others get an empty `_result`). Media is
//! the [`FlvSource`]'s tags, one RTMP message each. A wrong login gets `NetStream.Play.Failed`
//! and the connection closed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use anyhow::{Context, bail};

use super::Args;
use super::audio::ClipQueue;
use super::flv::FlvSource;

/// The chunk size the server sends with (it tells the client first).
const OUT_CHUNK: usize = 4096;
const HANDSHAKE: usize = 1536;

/// Serves RTMP on `address:port` until killed; prints the `ready` line.
pub fn serve(args: Args, clips: Arc<ClipQueue>) -> anyhow::Result<()> {
    let listener = TcpListener::bind((args.address.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.address, args.port))?;
    let port = listener.local_addr()?.port();
    println!(
        "ready rtmp://{}:{port}/bcs/channel0_main.bcs?channel=0&stream=0",
        args.address
    );
    let args = Arc::new(args);
    for stream in listener.incoming().flatten() {
        let (args, clips) = (args.clone(), clips.clone());
        std::thread::spawn(move || {
            if let Err(e) = session(stream, &args, clips) {
                eprintln!("fake camera (rtmp): {e:#}");
            }
        });
    }
    Ok(())
}

fn session(mut stream: TcpStream, args: &Args, clips: Arc<ClipQueue>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    handshake(&mut stream)?;
    let mut reader = ChunkReader::new(stream.try_clone()?);
    let mut writer = ChunkWriter {
        stream: stream.try_clone()?,
    };
    writer.send(2, 1, 0, 0, &(OUT_CHUNK as u32).to_be_bytes())?;
    loop {
        let message = reader.read_message()?;
        match message.kind {
            1 => {
                let size = message.payload.get(..4).context("short set chunk size")?;
                reader.chunk_size = u32::from_be_bytes(size.try_into()?) as usize & 0x7fff_ffff;
            }
            20 => {
                let values = amf::decode_all(&message.payload);
                let name = values.first().and_then(amf::Value::as_str).unwrap_or("");
                let txn = values.get(1).and_then(amf::Value::as_number).unwrap_or(0.0);
                match name {
                    "connect" => {
                        writer.send(2, 5, 0, 0, &2_500_000u32.to_be_bytes())?;
                        let mut bandwidth = 2_500_000u32.to_be_bytes().to_vec();
                        bandwidth.push(2);
                        writer.send(2, 6, 0, 0, &bandwidth)?;
                        let reply = amf::command(
                            "_result",
                            txn,
                            &[
                                amf::object(&[("fmsVer", amf::string("FMS/3,0,1,123"))]),
                                status("status", "NetConnection.Connect.Success", "Connected."),
                            ],
                        );
                        writer.send(3, 20, 0, 0, &reply)?;
                    }
                    "createStream" => {
                        let reply = amf::command("_result", txn, &[amf::null(), amf::number(1.0)]);
                        writer.send(3, 20, 0, 0, &reply)?;
                    }
                    "play" => {
                        let name = values.get(3).and_then(amf::Value::as_str).unwrap_or("");
                        return play(writer, reader, name, args, clips);
                    }
                    _ if txn > 0.0 => {
                        let reply = amf::command("_result", txn, &[amf::null(), amf::null()]);
                        writer.send(3, 20, 0, 0, &reply)?;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Checks the login in the stream name's query, then sends the stream until the client leaves.
fn play(
    mut writer: ChunkWriter,
    mut reader: ChunkReader,
    name: &str,
    args: &Args,
    clips: Arc<ClipQueue>,
) -> anyhow::Result<()> {
    let query = url::Url::parse(&format!("rtmp://camera/bcs/{name}"))?;
    let value = |key: &str| {
        query
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    if let (Some(user), Some(password)) = (&args.username, &args.password)
        && (value("user").as_ref() != Some(user) || value("password").as_ref() != Some(password))
    {
        let failed = status("error", "NetStream.Play.Failed", "Unauthorized (401)");
        writer.send(
            5,
            20,
            1,
            0,
            &amf::command("onStatus", 0.0, &[amf::null(), failed]),
        )?;
        return Ok(());
    }
    if !query.path().starts_with("/bcs/channel0_") {
        let missing = status("error", "NetStream.Play.StreamNotFound", "Not Found (404)");
        writer.send(
            5,
            20,
            1,
            0,
            &amf::command("onStatus", 0.0, &[amf::null(), missing]),
        )?;
        return Ok(());
    }
    // Stream Begin, then the play status.
    writer.send(2, 4, 0, 0, &[0, 0, 0, 0, 0, 1])?;
    for code in ["NetStream.Play.Reset", "NetStream.Play.Start"] {
        let start = status("status", code, "Playing.");
        writer.send(
            5,
            20,
            1,
            0,
            &amf::command("onStatus", 0.0, &[amf::null(), start]),
        )?;
    }
    // The client's acknowledgements are read and dropped, so its socket never fills.
    std::thread::spawn(move || while reader.read_message().is_ok() {});
    let mut source = FlvSource::start(args, clips)?;
    loop {
        let tag = source.next_tag()?;
        let csid = match tag.kind {
            8 => 4,
            9 => 6,
            _ => 5,
        };
        if writer
            .send(csid, tag.kind, 1, tag.timestamp, &tag.body)
            .is_err()
        {
            return Ok(()); // the client left
        }
    }
}

fn status(level: &str, code: &str, description: &str) -> Vec<u8> {
    amf::object(&[
        ("level", amf::string(level)),
        ("code", amf::string(code)),
        ("description", amf::string(description)),
    ])
}

/// The plain RTMP handshake: C0 C1 in, S0 S1 S2 out, C2 in.
fn handshake(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut c0c1 = [0u8; 1 + HANDSHAKE];
    stream.read_exact(&mut c0c1)?;
    if c0c1[0] != 3 {
        bail!("RTMP version {} asked for", c0c1[0]);
    }
    let mut out = vec![3u8];
    out.extend_from_slice(&[0; 8]);
    out.extend((0..HANDSHAKE - 8).map(|_| fastrand::u8(..)));
    out.extend_from_slice(&c0c1[1..]);
    stream.write_all(&out)?;
    let mut c2 = [0u8; HANDSHAKE];
    stream.read_exact(&mut c2)?;
    Ok(())
}

/// A whole message from the client.
struct Message {
    kind: u8,
    payload: Vec<u8>,
}

/// Per chunk stream: the last header's fields and the message being put together.
#[derive(Default)]
struct InStream {
    length: usize,
    kind: u8,
    extended: bool,
    payload: Vec<u8>,
}

/// Reads the client's chunks into messages.
struct ChunkReader {
    stream: TcpStream,
    chunk_size: usize,
    streams: HashMap<u32, InStream>,
}

impl ChunkReader {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            chunk_size: 128,
            streams: HashMap::new(),
        }
    }

    fn read_n(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn read_message(&mut self) -> anyhow::Result<Message> {
        loop {
            let first = self.read_n(1)?[0];
            let format = first >> 6;
            let csid = match first & 0x3f {
                0 => 64 + self.read_n(1)?[0] as u32,
                1 => {
                    let b = self.read_n(2)?;
                    64 + b[0] as u32 + 256 * b[1] as u32
                }
                id => id as u32,
            };
            let header = self.read_n([11, 7, 3, 0][format as usize])?;
            let mut state = self.streams.remove(&csid).unwrap_or_default();
            if format < 3 {
                state.extended = header[..3] == [0xff, 0xff, 0xff];
            }
            if format <= 1 {
                state.length = u32::from_be_bytes([0, header[3], header[4], header[5]]) as usize;
                state.kind = header[6];
            }
            if state.extended {
                self.read_n(4)?;
            }
            let want = (state.length - state.payload.len()).min(self.chunk_size);
            let data = self.read_n(want)?;
            state.payload.extend_from_slice(&data);
            if state.payload.len() >= state.length {
                let message = Message {
                    kind: state.kind,
                    payload: std::mem::take(&mut state.payload),
                };
                self.streams.insert(csid, state);
                return Ok(message);
            }
            self.streams.insert(csid, state);
        }
    }
}

/// Writes messages as chunks of [`OUT_CHUNK`] (a full header on each message's first chunk).
struct ChunkWriter {
    stream: TcpStream,
}

impl ChunkWriter {
    fn send(
        &mut self,
        csid: u8,
        kind: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let extended = timestamp >= 0xff_ffff;
        let mut out = Vec::with_capacity(payload.len() + 32);
        out.push(csid);
        out.extend_from_slice(&timestamp.min(0xff_ffff).to_be_bytes()[1..]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.extend_from_slice(&stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        for (i, chunk) in payload.chunks(OUT_CHUNK).enumerate() {
            if i > 0 {
                out.push(0xc0 | csid);
                if extended {
                    out.extend_from_slice(&timestamp.to_be_bytes());
                }
            }
            out.extend_from_slice(chunk);
        }
        self.stream.write_all(&out)?;
        Ok(())
    }
}

/// Just enough AMF0 for RTMP's commands.
mod amf {
    pub enum Value {
        Number(f64),
        String(String),
        Other,
    }

    impl Value {
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_number(&self) -> Option<f64> {
            match self {
                Value::Number(n) => Some(*n),
                _ => None,
            }
        }
    }

    pub fn number(n: f64) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&n.to_be_bytes());
        out
    }

    pub fn string(s: &str) -> Vec<u8> {
        let mut out = vec![2];
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
        out
    }

    pub fn null() -> Vec<u8> {
        vec![5]
    }

    pub fn object(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![3];
        for (key, value) in fields {
            out.extend_from_slice(&(key.len() as u16).to_be_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&[0, 0, 9]);
        out
    }

    pub fn command(name: &str, txn: f64, args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = string(name);
        out.extend(number(txn));
        for arg in args {
            out.extend_from_slice(arg);
        }
        out
    }

    /// The values at the top level; decoding stops at the first one it cannot read.
    pub fn decode_all(mut data: &[u8]) -> Vec<Value> {
        let mut values = Vec::new();
        while let Some((value, rest)) = decode(data) {
            values.push(value);
            data = rest;
        }
        values
    }

    fn decode(data: &[u8]) -> Option<(Value, &[u8])> {
        let (&marker, rest) = data.split_first()?;
        match marker {
            0 => {
                let n = f64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                Some((Value::Number(n), &rest[8..]))
            }
            1 => Some((Value::Other, rest.get(1..)?)),
            2 => {
                let (s, rest) = short_string(rest)?;
                Some((Value::String(s), rest))
            }
            3 => Some((Value::Other, skip_properties(rest)?)),
            5 | 6 => Some((Value::Other, rest)),
            8 => Some((Value::Other, skip_properties(rest.get(4..)?)?)),
            _ => None,
        }
    }

    fn short_string(data: &[u8]) -> Option<(String, &[u8])> {
        let len = u16::from_be_bytes(data.get(..2)?.try_into().ok()?) as usize;
        let s = String::from_utf8_lossy(data.get(2..2 + len)?).into_owned();
        Some((s, &data[2 + len..]))
    }

    /// Skips an object's properties up to and with its end marker.
    fn skip_properties(mut data: &[u8]) -> Option<&[u8]> {
        loop {
            if data.get(..3)? == [0, 0, 9] {
                return Some(&data[3..]);
            }
            let (_, rest) = short_string(data)?;
            let (_, rest) = decode(rest)?;
            data = rest;
        }
    }
}
