//! Update bundles (issue 17): `cargo xtask bundle` makes a signed RAUC bundle from the same
//! build as the image, and a bundle signed by another key is refused by what the image
//! trusts. Host only: RAUC's own `rauc info` checks the signature against the development
//! certificate, as the box checks it before installing.
//!
//! The bundle is made from the test image (`--testport`), which the QEMU tests before this one
//! have built: the image step finds it current.

use std::process::Command;
use system_tests::*;

/// `rauc info --keyring=CERT BUNDLE`: its status and what it printed.
fn rauc_info(cert: &std::path::Path, bundle: &std::path::Path) -> (bool, String) {
    let out = Command::new("rauc")
        .arg("info")
        .arg(format!("--keyring={}", cert.display()))
        .arg(bundle)
        .output()
        .unwrap_or_else(|e| panic!("run rauc info (cargo xtask bundle installs rauc): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `bundle:` line of the task's output.
fn bundle_path(stdout: &str) -> std::path::PathBuf {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("bundle: "))
        .map(|p| std::path::PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("cargo xtask bundle named no bundle:\n{stdout}"))
}

#[test]
fn a_bundle_carries_the_image_version_and_one_signed_by_another_key_is_refused() {
    let made = xtask_visible(&["bundle", "--testport"]);
    let stdout = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        made.status.success(),
        "cargo xtask bundle failed:\n{stdout}"
    );
    let bundle = bundle_path(&stdout);
    let trusted = workspace_root().join("out/keys/bundle.cert.pem");

    // Signed by the development key, for this board, with the image's version.
    let (ok, info) = rauc_info(&trusted, &bundle);
    assert!(ok, "rauc refused the development bundle:\n{info}");
    let version = std::fs::read_to_string(workspace_root().join("out/image/qemu-testport/version"))
        .expect("the image build writes its version");
    let (compatible, version) = version
        .trim()
        .split_once(' ')
        .expect("`sbc-<board> <version>`");
    assert!(
        info.contains(&format!("Compatible: \t'{compatible}'")),
        "{info}"
    );
    assert!(
        info.contains(&format!("Version:    \t'{version}'")),
        "{info}"
    );
    assert!(info.contains("Bundle Format: \tverity"), "{info}");

    // Another key: the task refuses to call it done, and RAUC refuses the bundle.
    let dir = scratch("bundle");
    let (key, cert) = (dir.join("other.key.pem"), dir.join("other.cert.pem"));
    let made_keys = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/O=Elsewhere/CN=not ours"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made_keys.status.success(),
        "openssl could not make a key pair"
    );
    let other = xtask_visible(&[
        "bundle",
        "--testport",
        "--key",
        &key.to_string_lossy(),
        "--cert",
        &cert.to_string_lossy(),
    ]);
    let other_out = String::from_utf8_lossy(&other.stdout).into_owned();
    assert!(
        !other.status.success(),
        "cargo xtask bundle called a bundle signed by another key done:\n{other_out}"
    );
    let foreign = bundle_path(&other_out);
    let (ok, info) = rauc_info(&trusted, &foreign);
    assert!(!ok, "rauc accepted a bundle signed by another key:\n{info}");
    assert!(info.to_lowercase().contains("signature"), "{info}");
}
