//! A "camera" that answers everything with random bytes: Vigil must report an error and retry,
//! never panic, and keep its other cameras running.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use anyhow::Context;

/// Serves random bytes on `address:port` until killed.
pub fn serve(address: &str, port: u16, path: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind((address, port))
        .with_context(|| format!("cannot listen on {address}:{port}"))?;
    let port = listener.local_addr()?.port();
    println!("ready rtsp://{address}:{port}{path}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer(stream));
    }
    Ok(())
}

/// For every request read, a few kilobytes of noise.
fn answer(mut stream: TcpStream) {
    let mut request = [0u8; 4096];
    while let Ok(n) = stream.read(&mut request) {
        if n == 0 {
            return;
        }
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        if stream.write_all(&noise).is_err() {
            return;
        }
    }
}
