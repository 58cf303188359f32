//! The facility agent's Debian package, as a hospital's IT person gets it: built by
//! `deploy/package/facility-agent/build`, its contents and permissions checked, installed with
//! dpkg into a throwaway root (maintainer scripts included: the agent's user, its group for
//! the HIS, the inbox), run from there, its unit's hardening scored by systemd, then purged.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lienthong_tests::{repo_root, workspace_bin};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// dpkg acting on `root` instead of `/`: maintainer scripts run without chroot, with
/// DPKG_ROOT set (they honour it); the throwaway root has no libc package, so dependencies
/// are forced (the binary runs with this machine's libraries).
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display())).args([
        "--force-script-chrootless",
        "--force-not-root",
        "--force-depends",
        "--no-triggers",
        "--log=/dev/null",
    ]);
    cmd
}

fn build_package(out: &Path) -> PathBuf {
    let built = run(
        Command::new(repo_root().join("deploy/package/facility-agent/build"))
            .arg("--binary")
            .arg(workspace_bin("lienthong-facility-agent"))
            .arg("--out")
            .arg(out)
            .arg("--fast"),
    );
    PathBuf::from(text(&built).trim())
}

#[test]
fn the_package_installs_into_a_throwaway_root_and_runs_from_there() {
    let work = tempfile::tempdir().expect("temporary folder");
    let deb = build_package(work.path());
    assert!(deb.is_file(), "{}", deb.display());

    // Contents, with the permissions they install with.
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for (perms, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/lienthong-facility-agent"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/lienthong-facility-agent.service",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/sysusers.d/lienthong-facility-agent.conf",
        ),
        (
            "-rw-r----- root/root",
            "./etc/lienthong/facility-agent.conf",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/lienthong-facility-agent/INSTALL.md",
        ),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(perms) && l.ends_with(path)),
            "{perms} {path} missing from\n{listing}"
        );
    }
    assert!(
        !listing.contains("token"),
        "no token ships in the package:\n{listing}"
    );
    let fields = text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ])));
    assert!(
        fields.contains("Package: lienthong-facility-agent"),
        "{fields}"
    );
    assert!(fields.contains("Depends: libc6"), "{fields}");
    // The settings are a conffile: an upgrade keeps the hospital's edits.
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/lienthong/facility-agent.conf");

    // Install into a throwaway root.
    let root = work.path().join("root");
    for dir in ["var/lib/dpkg/updates", "var/lib/dpkg/info"] {
        std::fs::create_dir_all(root.join(dir)).expect("dpkg database");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("dpkg status");
    run(dpkg(&root).arg("-i").arg(&deb));
    let status = text(&run(dpkg(&root).args(["-s", "lienthong-facility-agent"])));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("users created");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("lienthong-agent:") && l.ends_with(":/usr/sbin/nologin")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).expect("groups created");
    assert!(
        group.lines().any(|l| l.starts_with("lienthong-his:")),
        "{group}"
    );
    assert_eq!(
        mode(&root.join("var/spool/lienthong-facility-agent/inbox")),
        0o2770
    );
    let conf = root.join("etc/lienthong/facility-agent.conf");
    assert_eq!(mode(&conf), 0o640);

    // The agent runs from there, and the shipped settings file is one it accepts.
    let agent = root.join("usr/bin/lienthong-facility-agent");
    let help = text(&run(Command::new(&agent).arg("--help")));
    assert!(
        help.contains("--inbox") && help.contains("status"),
        "{help}"
    );
    let data = work.path().join("data");
    let out = Command::new(&agent)
        .arg("status")
        .arg("--config")
        .arg(&conf)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("agent runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "no status yet, but the settings parse"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no status in"),
        "{out:?}"
    );
    let typo = work.path().join("typo.conf");
    std::fs::write(&typo, "LIENTHONG_AGENT_INBX=/srv/inbox\n").expect("write");
    let out = Command::new(&agent)
        .arg("--config")
        .arg(&typo)
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1") && stderr.contains("LIENTHONG_AGENT_INBX"),
        "{stderr}"
    );

    // The unit's hardening, as systemd scores it (0 = fully confined, 10 = none).
    let unit = root.join("lib/systemd/system/lienthong-facility-agent.service");
    let score = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit));
    let report = text(&score);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    assert!(
        level <= 2.0,
        "exposure {level} (at most 2.0 expected):\n{report}"
    );

    // Purge: settings go, the facility's data (inbox) stays.
    run(dpkg(&root).args(["--purge", "lienthong-facility-agent"]));
    assert!(!root.join("usr/bin/lienthong-facility-agent").exists());
    assert!(!conf.exists(), "purge removes the settings");
    assert!(
        root.join("var/spool/lienthong-facility-agent/inbox")
            .is_dir(),
        "the inbox is kept"
    );
}
