//! The ceiling in benches/run.py: bare hyper 1.x serving every file of a
//! tree from memory, with nothing of ruchy-serve's around it. A
//! current-thread runtime (ruchy-serve runs `workers = 1` in the suite),
//! hyper-util's auto builder (HTTP/1.1 and h2c), one `content-type` header,
//! 404 with an empty body for anything else. What ruchy-serve does per
//! request beyond this (resolution, validators, conditionals, ranges,
//! metrics, deadlines, the access log) is what "ruchy-serve / ceiling"
//! measures.
//!
//! Built only for the suite: `cargo build --release --features bench-ceiling
//! --bin hyper-ceiling`. Usage: `hyper-ceiling ROOT 127.0.0.1:PORT`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Files = HashMap<String, (Bytes, HeaderValue)>;

/// Every regular file below `dir`, by its URL path.
fn load(root: &Path, dir: &Path, files: &mut Files) {
    for entry in std::fs::read_dir(dir).expect("read the tree") {
        let path = entry.expect("read the tree").path();
        if path.is_dir() {
            load(root, &path, files);
        } else if path.is_file() {
            let rel = path.strip_prefix(root).expect("below the root");
            let url = format!("/{}", rel.to_string_lossy());
            let mime = mime_guess::from_path(&path).first_or_octet_stream();
            let body = Bytes::from(std::fs::read(&path).expect("read a file"));
            files.insert(
                url,
                (body, HeaderValue::from_str(mime.as_ref()).expect("mime")),
            );
        }
    }
}

async fn answer(
    files: Arc<Files>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match files.get(req.uri().path()) {
        Some((body, mime)) => {
            let mut r = Response::new(Full::new(body.clone()));
            r.headers_mut().insert(header::CONTENT_TYPE, mime.clone());
            r
        }
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, addr] = &args[..] else {
        eprintln!("usage: hyper-ceiling ROOT ADDR");
        std::process::exit(64);
    };
    let mut files = Files::new();
    load(Path::new(root), Path::new(root), &mut files);
    let files = Arc::new(files);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let files = Arc::clone(&files);
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(Arc::clone(&files), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
