//! HTTPS: the server with `server.tls_cert` / `server.tls_key`, and the `baton` client
//! trusting a private CA with `--ca-cert`, its key from the environment.

use std::process::Command;

use crate::support::{Server, baton_bin};

/// A private CA, and a certificate it signed for 127.0.0.1 and localhost: the paths of
/// the CA's certificate and of the server's certificate and key.
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Baton test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

#[tokio::test]
async fn the_api_over_https_with_a_private_ca_and_the_client_sending_its_key() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let s = Server::with(&[
        ("server.tls_cert", cert.to_str().unwrap()),
        ("server.tls_key", key.to_str().unwrap()),
    ])
    .await;
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let admin = crate::tenancy::admin_key_over(&s, &ca).await;

    // A client that trusts the CA gets in; one that does not, and plain HTTP, do not.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let resp = trusting
        .get(format!("{}/v1/jobs", s.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let untrusting = reqwest::Client::new();
    let err = untrusting
        .get(format!("{}/v1/health", s.base))
        .send()
        .await
        .expect_err("an unknown CA is refused");
    assert!(err.is_connect(), "{err:?}");
    let plain = s.base.replacen("https://", "http://", 1);
    assert!(
        reqwest::get(format!("{plain}/v1/health")).await.is_err(),
        "plain HTTP on the HTTPS port gets no answer"
    );

    // The command-line client: https, the CA, the key from the environment, never shown.
    let base = s.base.clone();
    let ca_arg = ca.clone();
    let admin_env = admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(baton_bin())
            .args(["run", "FAKE text over tls", "--server", &base, "--ca-cert"])
            .arg(&ca_arg)
            .env("BATON_API_KEY", &admin_env)
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("over tls"), "{printed}");
    assert!(!printed.contains(&admin), "the key was printed");

    // The same from the client's configuration file, which must be private to its owner.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("baton/client.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!(
            "server = \"{}\"\napi_key = \"{admin}\"\nca_cert = \"{}\"\n",
            s.base,
            ca.display()
        ),
    )
    .unwrap();
    let jobs_ls = |home: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            Command::new(baton_bin())
                .args(["jobs", "ls"])
                .env("XDG_CONFIG_HOME", home)
                .env_remove("BATON_API_KEY")
                .env_remove("BATON_SERVER")
                .output()
                .unwrap()
        })
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = jobs_ls(config.path().to_path_buf()).await.unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listed.contains("completed"), "{listed}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = jobs_ls(config.path().to_path_buf()).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    assert!(!err.contains(&admin));
    s.stop().await;
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_at_start() {
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, key) = private_ca(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let roots = tempfile::tempdir().unwrap();
    let load = |extra: &[(&str, &std::path::Path)]| {
        let mut flags = crate::support::test_flags(dir.path(), roots.path());
        for (k, v) in extra {
            flags.push((k.to_string(), v.display().to_string()));
        }
        baton::Config::load(None, &[], &flags)
    };
    let err = load(&[("server.tls_cert", &cert)]).unwrap_err();
    assert!(format!("{err:#}").contains("go together"), "{err:#}");
    let config = load(&[("server.tls_cert", &key), ("server.tls_key", &key)]).unwrap();
    let err = baton::App::build(config).await.err().unwrap();
    assert!(format!("{err:#}").contains("server.tls_cert"), "{err:#}");
    let config = load(&[("server.tls_cert", &cert), ("server.tls_key", &cert)]).unwrap();
    let err = baton::App::build(config).await.err().unwrap();
    assert!(format!("{err:#}").contains("server.tls_key"), "{err:#}");
}
