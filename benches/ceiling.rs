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
//! --bin hyper-ceiling`. Usage: `hyper-ceiling ROOT 127.0.0.1:PORT
//! [127.0.0.1:TLSPORT CERT KEY]`; the TLS listener is tokio-rustls with the
//! same provider as ruchy-serve, ALPN h2 and http/1.1, for the suite's TLS
//! workloads.

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

/// Serves HTTP on every connection of `listener`, through TLS when `tls`.
async fn serve(
    listener: tokio::net::TcpListener,
    files: Arc<Files>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let files = Arc::clone(&files);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(Arc::clone(&files), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
        });
    }
}

/// A TLS acceptor for one certificate chain and key (PEM files).
fn acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the key");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (root, addr, tls) = match &args[..] {
        [_, root, addr] => (root, addr, None),
        [_, root, addr, tls_addr, cert, key] => (root, addr, Some((tls_addr, cert, key))),
        _ => {
            eprintln!("usage: hyper-ceiling ROOT ADDR [TLS_ADDR CERT KEY]");
            std::process::exit(64);
        }
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
        if let Some((tls_addr, cert, key)) = tls {
            let tls_listener = tokio::net::TcpListener::bind(tls_addr).await.expect("bind");
            tokio::spawn(serve(
                tls_listener,
                Arc::clone(&files),
                Some(acceptor(cert, key)),
            ));
        }
        serve(listener, files, None).await;
    });
}
