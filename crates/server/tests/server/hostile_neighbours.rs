//! The socket file against everyone else on the machine: symlinks, files and FIFOs planted at
//! every name the server uses (`PATH`, `PATH.lock`, the default directory), before startup and
//! while it runs, with the server running as root and as an unprivileged user. After each
//! case every planted object and every link target must be unchanged (same inode, mode, owner,
//! bytes), and nothing may have been created through a link.
//!
//! These tests need root (to act as two users); as another user they return early.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use udsecho_harness::{Server, Signal, binary, raw_round_trip, short_temp_dir};

const NOBODY: u32 = 65534;
const STOP: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Who runs the server, and who plants things next to it.
#[derive(Debug, Clone, Copy)]
struct Cast {
    server: u32,
    attacker: u32,
}

const CASTS: [Cast; 2] = [
    Cast {
        server: 0,
        attacker: NOBODY,
    },
    Cast {
        server: NOBODY,
        attacker: 0,
    },
];

/// A world-writable directory with the sticky bit, like `/tmp` (anyone may add names; the
/// server refuses directories where others could also rename its own), and a private vault,
/// owned by the server's user, holding a file the server could modify if it followed a link.
/// The test itself runs as root, so it can still swap names the server owns, as the owner of
/// the directory could.
struct Scene {
    cast: Cast,
    arena: tempfile::TempDir,
    vault: tempfile::TempDir,
}

impl Scene {
    fn new(cast: Cast) -> Scene {
        let arena = short_temp_dir();
        fs::set_permissions(arena.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let vault = short_temp_dir();
        let victim = vault.path().join("victim");
        fs::write(&victim, "the server's own secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        for path in [vault.path(), &victim] {
            std::os::unix::fs::lchown(path, Some(cast.server), Some(cast.server)).unwrap();
        }
        Scene { cast, arena, vault }
    }

    fn socket(&self) -> PathBuf {
        self.arena.path().join("s.sock")
    }

    fn lock(&self) -> PathBuf {
        self.arena.path().join("s.sock.lock")
    }

    fn victim(&self) -> PathBuf {
        self.vault.path().join("victim")
    }

    /// A name in the vault that nothing should ever create.
    fn missing(&self) -> PathBuf {
        self.vault.path().join("created-through-a-link")
    }

    /// Creates `what` at `at` (through a temporary name and a rename, as a racer would), owned
    /// by the attacker unless it is the server's own notes.
    fn plant(&self, what: Planted, at: &Path) {
        let tmp = self.arena.path().join(".planting");
        match what {
            Planted::LinkToVictim => symlink(self.victim(), &tmp).unwrap(),
            Planted::LinkToNothing => symlink(self.missing(), &tmp).unwrap(),
            Planted::ForeignFile | Planted::OwnNotes => {
                fs::write(&tmp, "notes nobody may lose").unwrap();
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
            }
            Planted::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &tmp,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o666),
                    0,
                )
                .unwrap();
            }
        }
        let owner = match what {
            Planted::OwnNotes => self.cast.server,
            _ => self.cast.attacker,
        };
        std::os::unix::fs::lchown(&tmp, Some(owner), Some(owner)).unwrap();
        fs::rename(&tmp, at).unwrap();
    }

    /// Every entry of the arena and the vault with its identity and content.
    fn snapshot(&self) -> Vec<String> {
        let mut all = Vec::new();
        for dir in [self.arena.path(), self.vault.path()] {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for path in names {
                all.push(describe(&path));
            }
        }
        all
    }

    fn server(&self) -> udsecho_harness::ServerBuilder {
        let builder = Server::builder().socket(self.socket());
        match self.cast.server {
            0 => builder,
            uid => builder.user(uid, uid),
        }
    }
}

/// What sits at a path: kind, inode, mode, owner, and the bytes or link target.
fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path).unwrap();
    let detail = if meta.file_type().is_symlink() {
        format!("-> {}", fs::read_link(path).unwrap().display())
    } else if meta.is_file() {
        format!("{:?}", fs::read(path).unwrap())
    } else {
        String::new()
    };
    format!(
        "{} ino={} mode={:o} uid={} {detail}",
        path.display(),
        meta.ino(),
        meta.mode(),
        meta.uid()
    )
}

#[derive(Debug, Clone, Copy)]
enum Planted {
    LinkToVictim,
    LinkToNothing,
    ForeignFile,
    OwnNotes,
    Fifo,
}

const EVERY_PLANT: [Planted; 5] = [
    Planted::LinkToVictim,
    Planted::LinkToNothing,
    Planted::ForeignFile,
    Planted::OwnNotes,
    Planted::Fifo,
];

/// Starts the server expecting a refusal: exit 1, one line naming `names`.
fn expect_refusal(scene: &Scene, names: &Path, case: &str) {
    let mut server = scene.server().no_wait().start().unwrap();
    let status = server.wait_exit(STOP).unwrap();
    let stderr = server.stderr();
    assert_eq!(
        status.code(),
        Some(1),
        "{case}: exit status; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{case}: one line: {stderr}"
    );
    assert!(
        stderr.contains(names.to_str().unwrap()) && stderr.contains("refusing"),
        "{case}: names {} and refuses: {stderr}",
        names.display()
    );
}

#[test]
fn objects_planted_at_the_socket_path_are_refused_and_left_exactly_as_they_were() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        for what in EVERY_PLANT {
            let scene = Scene::new(cast);
            scene.plant(what, &scene.socket());
            let before = scene.snapshot();
            let case = format!("{cast:?}, {what:?} at PATH");
            expect_refusal(&scene, &scene.socket(), &case);
            assert_eq!(scene.snapshot(), before, "{case}: nothing changed");
            assert!(
                !scene.missing().exists(),
                "{case}: nothing created through a link"
            );
        }
    }
}

#[test]
fn objects_planted_at_the_lock_path_are_refused_and_left_exactly_as_they_were() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        for what in EVERY_PLANT {
            let scene = Scene::new(cast);
            scene.plant(what, &scene.lock());
            let before = scene.snapshot();
            let case = format!("{cast:?}, {what:?} at PATH.lock");
            expect_refusal(&scene, &scene.lock(), &case);
            assert_eq!(scene.snapshot(), before, "{case}: nothing changed");
            assert!(
                !scene.missing().exists(),
                "{case}: nothing created through a link"
            );
        }
    }
}

#[test]
fn a_file_at_the_path_and_notes_at_the_lock_path_both_survive_the_refusal() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        let scene = Scene::new(cast);
        scene.plant(Planted::ForeignFile, &scene.socket());
        scene.plant(Planted::OwnNotes, &scene.lock());
        let before = scene.snapshot();
        let mut server = scene.server().no_wait().start().unwrap();
        assert_eq!(server.wait_exit(STOP).unwrap().code(), Some(1));
        assert_eq!(scene.snapshot(), before, "{cast:?}: {}", server.stderr());
    }
}

#[test]
fn objects_swapped_in_while_the_server_runs_survive_its_shutdown() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        for what in [Planted::LinkToVictim, Planted::ForeignFile, Planted::Fifo] {
            for at_lock in [false, true] {
                let scene = Scene::new(cast);
                let mut server = scene.server().start().unwrap();
                let at = if at_lock {
                    scene.lock()
                } else {
                    scene.socket()
                };
                scene.plant(what, &at);
                let planted = describe(&at);
                let victim = describe(&scene.victim());
                let case = format!("{cast:?}, {what:?} swapped in at {}", at.display());
                let status = server.stop(Signal::TERM, STOP).unwrap();
                assert!(status.success(), "{case}: {status}; {}", server.stderr());
                assert_eq!(describe(&at), planted, "{case}: planted object untouched");
                assert_eq!(
                    describe(&scene.victim()),
                    victim,
                    "{case}: victim untouched"
                );
                assert!(!scene.missing().exists(), "{case}");
                // What the server created itself is gone; only the planted object remains.
                let left: Vec<_> = fs::read_dir(scene.arena.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(
                    left,
                    [at.file_name().unwrap()],
                    "{case}: {}",
                    server.stderr()
                );
                assert!(
                    server.stderr().contains("replaced"),
                    "{case}: {}",
                    server.stderr()
                );
            }
        }
    }
}

#[test]
fn a_clean_run_leaves_nothing_behind_and_touches_nothing_else() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        let scene = Scene::new(cast);
        let before = scene.snapshot();
        let mut server = scene.server().start().unwrap();
        assert_eq!(raw_round_trip(&scene.socket(), b"hi", 2).unwrap(), b"hi");
        let socket = fs::symlink_metadata(scene.socket()).unwrap();
        assert_eq!(
            socket.uid(),
            cast.server,
            "{cast:?}: the socket is the server's"
        );
        assert_eq!(socket.mode() & 0o7777, 0o600, "{cast:?}");
        assert!(server.stop(Signal::TERM, STOP).unwrap().success());
        assert_eq!(scene.snapshot(), before, "{cast:?}: {}", server.stderr());
    }
}

#[test]
fn a_stale_socket_of_another_user_is_not_removed() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        let scene = Scene::new(cast);
        drop(UnixListener::bind(scene.socket()).unwrap());
        std::os::unix::fs::lchown(scene.socket(), Some(cast.attacker), None).unwrap();
        let before = scene.snapshot();
        let mut server = scene.server().no_wait().start().unwrap();
        assert_eq!(server.wait_exit(STOP).unwrap().code(), Some(1));
        let stderr = server.stderr();
        assert!(
            stderr.contains(&format!("owned by uid {}", cast.attacker)),
            "{cast:?}: {stderr}"
        );
        assert_eq!(scene.snapshot(), before, "{cast:?}");
    }
}

#[test]
fn a_directory_where_others_could_replace_the_socket_is_refused() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        // World-writable without the sticky bit: anyone could rename the server's names.
        let open = short_temp_dir();
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).unwrap();
        // Owned by the other user: its owner could.
        let theirs = short_temp_dir();
        fs::set_permissions(theirs.path(), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::lchown(theirs.path(), Some(cast.attacker), None).unwrap();
        for (dir, says) in [
            (&open, "without the sticky bit"),
            (&theirs, "is owned by uid"),
        ] {
            // Root owns every temp dir, so "owned by another" only applies to nobody's server.
            if says == "is owned by uid" && cast.attacker == 0 {
                continue;
            }
            let socket = dir.path().join("s.sock");
            let builder = Server::builder().socket(&socket).no_wait();
            let builder = match cast.server {
                0 => builder,
                uid => builder.user(uid, uid),
            };
            let mut server = builder.start().unwrap();
            assert_eq!(
                server.wait_exit(STOP).unwrap().code(),
                Some(1),
                "{cast:?} {says}"
            );
            let stderr = server.stderr();
            assert!(
                stderr.contains(dir.path().to_str().unwrap()) && stderr.contains(says),
                "{cast:?}: {stderr}"
            );
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing created"
            );
        }
    }
}

/// The old server chmod-ed the path after bind: a racer renaming a symlink over the fresh
/// socket got `--socket-mode` applied to the link's target. Now the mode is set on the socket
/// before bind, so there is no path-based chmod to redirect.
#[test]
fn a_racer_swapping_links_over_the_fresh_socket_never_gets_a_chmod_through_them() {
    if !is_root() {
        return;
    }
    let scene = Scene::new(Cast {
        server: 0,
        attacker: NOBODY,
    });
    let socket = scene.socket();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = std::thread::spawn({
        let (socket, victim, stop) = (socket.clone(), scene.victim(), stop.clone());
        let tmp = scene.arena.path().join("link");
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::remove_file(&socket);
                std::thread::yield_now();
                let _ = symlink(&victim, &tmp);
                let _ = fs::rename(&tmp, &socket);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut bound = 0;
    for _ in 0..400 {
        if Instant::now() > deadline {
            break;
        }
        let server = scene
            .server()
            .args(["--socket-mode", "0666"])
            .no_wait()
            .start()
            .unwrap();
        let started = Instant::now();
        while !server.has_exited() && started.elapsed() < Duration::from_secs(2) {
            if server.stderr().contains("listening on") {
                bound += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(server);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    let mode = fs::metadata(scene.victim()).unwrap().mode() & 0o7777;
    assert_eq!(
        mode, 0o600,
        "the victim's mode changed ({bound} servers bound)"
    );
}

/// Starts a server as `uid` on `path` (waiting until it serves).
fn live_server_as(uid: u32, path: &Path) -> Server {
    let builder = Server::builder().socket(path);
    match uid {
        0 => builder,
        uid => builder.user(uid, uid),
    }
    .start()
    .unwrap()
}

/// Starts the server expecting the live-server refusal: exit 1, one line naming the socket as
/// live, with no word about the lock file (which would suggest deleting it).
fn expect_live_refusal(scene: &Scene, case: &str) {
    let mut server = scene.server().no_wait().start().unwrap();
    let status = server.wait_exit(STOP).unwrap();
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(1), "{case}: exit status; {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: a server is already listening on this socket",
            scene.socket().display()
        )),
        "{case}: names the live server: {stderr}"
    );
    assert!(!stderr.contains("lock"), "{case}: {stderr}");
}

#[test]
fn a_live_server_of_the_other_user_is_named_as_one_not_by_its_lock_file() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        let scene = Scene::new(cast);
        let mut theirs = live_server_as(cast.attacker, &scene.socket());
        let before = scene.snapshot();
        let case = format!("{cast:?}, the other user's udsecho-server live");
        expect_live_refusal(&scene, &case);
        assert_eq!(scene.snapshot(), before, "{case}: nothing changed");
        assert_eq!(
            raw_round_trip(&scene.socket(), b"still theirs", 4).unwrap(),
            b"still theirs",
            "{case}"
        );
        assert!(theirs.stop(Signal::TERM, STOP).unwrap().success(), "{case}");
    }
}

#[test]
fn a_live_listener_of_the_other_user_is_named_as_one_even_when_closed_to_us() {
    if !is_root() {
        return;
    }
    for cast in CASTS {
        let scene = Scene::new(cast);
        // Like `nc -lU` run by the other user: no lock file, and a 0600 socket that only its
        // owner (and root) can connect to.
        let listener = UnixListener::bind(scene.socket()).unwrap();
        fs::set_permissions(scene.socket(), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(scene.socket(), Some(cast.attacker), Some(cast.attacker))
            .unwrap();
        let before = scene.snapshot();
        let case = format!("{cast:?}, the other user's listener live");
        expect_live_refusal(&scene, &case);
        assert_eq!(scene.snapshot(), before, "{case}: nothing changed");
        drop(listener);
    }
}

mod default_socket {
    //! The default socket lives in a directory only its user can use.

    use super::*;

    /// A server with no `--socket`, as `uid`, with this environment.
    fn default_server(
        uid: u32,
        env: &[(&str, &Path)],
        expect: &Path,
    ) -> udsecho_harness::ServerBuilder {
        let mut builder = Server::builder()
            .default_socket(expect)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("TMPDIR");
        for (key, value) in env {
            builder = builder.env(*key, *value);
        }
        if uid != 0 {
            builder = builder.user(uid, uid);
        }
        builder
    }

    /// `udsecho-client` with no `--socket`, as `uid`, with this environment: echoes `ping`.
    fn default_client(uid: u32, env: &[(&str, &Path)]) -> std::process::Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(binary("udsecho-client"))
            .args(["--timeout", "5s"])
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("TMPDIR")
            .env_remove("UDSECHO_SOCKET")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap();
        // A client that refuses the directory exits without reading stdin: a broken pipe
        // here is that refusal, which the caller checks in the output.
        match std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"ping\n") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
        child.wait_with_output().unwrap()
    }

    fn assert_private(dir: &Path, uid: u32) {
        let meta = fs::symlink_metadata(dir).unwrap();
        assert!(meta.is_dir(), "{}", dir.display());
        assert_eq!(meta.uid(), uid, "{} owner", dir.display());
        assert_eq!(meta.mode() & 0o7777, 0o700, "{} mode", dir.display());
    }

    /// A sticky, world-writable `TMPDIR`, like `/tmp`.
    fn shared_tmp() -> tempfile::TempDir {
        let tmp = short_temp_dir();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        tmp
    }

    #[test]
    fn another_user_gets_a_0700_directory_under_tmpdir_and_the_client_finds_it() {
        if !is_root() {
            return;
        }
        let tmp = shared_tmp();
        let env = [("TMPDIR", tmp.path())];
        let dir = tmp.path().join(format!("udsecho-{NOBODY}"));
        let socket = dir.join("echo.sock");
        let mut server = default_server(NOBODY, &env, &socket).start().unwrap();
        assert_private(&dir, NOBODY);
        assert!(
            server.wait_stderr(socket.to_str().unwrap(), STOP),
            "{}",
            server.stderr()
        );
        let out = default_client(NOBODY, &env);
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(0), &b"ping\n"[..]),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(server.stop(Signal::TERM, STOP).unwrap().success());
        assert!(!socket.exists());
    }

    #[test]
    fn xdg_runtime_dir_gets_a_udsecho_subdirectory_and_the_client_agrees() {
        if !is_root() {
            return;
        }
        let runtime = short_temp_dir();
        // What the XDG spec promises (and what is trusted): the user's own, mode 0700.
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::lchown(runtime.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let env = [("XDG_RUNTIME_DIR", runtime.path())];
        let dir = runtime.path().join("udsecho");
        let socket = dir.join("echo.sock");
        let mut server = default_server(NOBODY, &env, &socket).start().unwrap();
        assert_private(&dir, NOBODY);
        let out = default_client(NOBODY, &env);
        assert_eq!(
            out.stdout,
            b"ping\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(server.stop(Signal::TERM, STOP).unwrap().success());
    }

    #[test]
    fn root_gets_run_udsecho_even_with_another_users_xdg_runtime_dir() {
        let dir = Path::new("/run/udsecho");
        if !is_root() || dir.exists() || !Path::new("/run").is_dir() {
            return; // not root, or a real installation lives there: leave it be
        }
        let socket = dir.join("echo.sock");
        // `su` without `-` leaves the caller's XDG_RUNTIME_DIR: root must not use a directory
        // another user owns.
        let theirs = short_temp_dir();
        std::os::unix::fs::lchown(theirs.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let env = [("XDG_RUNTIME_DIR", theirs.path())];
        let mut server = default_server(0, &env, &socket).start().unwrap();
        assert_private(dir, 0);
        assert!(!theirs.path().join("udsecho").exists());
        assert_eq!(raw_round_trip(&socket, b"root", 4).unwrap(), b"root");
        assert!(server.stop(Signal::TERM, STOP).unwrap().success());
        fs::remove_dir(dir).unwrap();
    }

    #[test]
    fn a_directory_that_is_not_private_is_refused_by_server_and_client() {
        if !is_root() {
            return;
        }
        // (what the attacker prepares, what the refusal says)
        type Prepare = fn(&Path, &Path);
        let cases: [(&str, Prepare, &str); 3] = [
            (
                "squatted by root, with a socket listening in it",
                |dir, _| {
                    fs::create_dir(dir).unwrap();
                    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
                },
                "owned by uid 0",
            ),
            (
                "the user's own but open to others",
                |dir, _| {
                    fs::create_dir(dir).unwrap();
                    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
                    std::os::unix::fs::lchown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
                },
                "has mode 0755",
            ),
            (
                "a symbolic link to a private directory",
                |dir, elsewhere| {
                    fs::create_dir(elsewhere).unwrap();
                    fs::set_permissions(elsewhere, fs::Permissions::from_mode(0o700)).unwrap();
                    std::os::unix::fs::lchown(elsewhere, Some(NOBODY), Some(NOBODY)).unwrap();
                    symlink(elsewhere, dir).unwrap();
                },
                "symbolic link",
            ),
        ];
        for (case, prepare, says) in cases {
            let tmp = shared_tmp();
            let env = [("TMPDIR", tmp.path())];
            let dir = tmp.path().join(format!("udsecho-{NOBODY}"));
            prepare(&dir, &tmp.path().join("elsewhere"));
            // An impostor listening where the client would look.
            let _impostor = UnixListener::bind(dir.join("echo.sock")).unwrap();
            let before = describe(&dir);
            let mut server = default_server(NOBODY, &env, &dir.join("echo.sock"))
                .no_wait()
                .start()
                .unwrap();
            assert_eq!(server.wait_exit(STOP).unwrap().code(), Some(1), "{case}");
            let stderr = server.stderr();
            assert!(
                stderr.contains(dir.to_str().unwrap()) && stderr.contains(says),
                "{case}: {stderr}"
            );
            assert_eq!(describe(&dir), before, "{case}: the directory is untouched");
            let out = default_client(NOBODY, &env);
            let client_err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{case}: client: {client_err}");
            assert!(
                client_err.contains(dir.to_str().unwrap()) && client_err.contains(says),
                "{case}: client: {client_err}"
            );
            assert!(
                out.stdout.is_empty(),
                "{case}: nothing reached the impostor's echo"
            );
        }
    }
}
