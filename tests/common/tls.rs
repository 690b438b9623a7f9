// SPDX-License-Identifier: GPL-2.0-or-later
//! TLS credentials for socket chardevs: a CA and a server certificate
//! for 127.0.0.1, written by `tls-certs.sh` (openssl), and QEMU's
//! tls-creds-x509 objects that read them.

use std::{path::Path, process::Command};

use serde_json::json;

use super::Qemu;

/// Writes ca-cert.pem, server-cert.pem and server-key.pem into `dir`.
pub fn make_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/tls-certs.sh");
    let out = Command::new(script)
        .arg(dir)
        .output()
        .expect("run tls-certs.sh");
    assert!(
        out.status.success(),
        "tls-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The side of a TLS connection that QEMU's credentials are for.
#[derive(Clone, Copy)]
pub enum Endpoint {
    /// A listening chardev; it does not ask its clients for certificates.
    Server,
    /// A client chardev; it checks the server's certificate against the CA.
    Client,
}

impl Qemu {
    /// Adds tls-creds-x509 `id` for `endpoint`, read from a directory of
    /// certificates made for this QEMU.
    pub fn add_tls_creds(&mut self, id: &str, endpoint: Endpoint) {
        let dir = self.dir.join(format!("tls-{id}"));
        std::fs::create_dir_all(&dir).expect("tls dir");
        make_certs(&dir);
        let args = match endpoint {
            Endpoint::Server => json!({"qom-type": "tls-creds-x509", "id": id,
                                       "endpoint": "server", "dir": dir,
                                       "verify-peer": false}),
            Endpoint::Client => json!({"qom-type": "tls-creds-x509", "id": id,
                                       "endpoint": "client", "dir": dir}),
        };
        self.mgr.ok("object-add", args);
    }
}
