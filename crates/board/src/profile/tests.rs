use super::*;

/// A boards folder in a temporary directory.
struct Boards(tempfile::TempDir);

impl Boards {
    fn new() -> Self {
        Boards(tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
    }

    fn add(&self, name: &str, toml: &str) -> &Self {
        let dir = self.0.path().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(PROFILE_FILE), toml).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    fn add_cmdline(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.0.path().join(name).join(CMDLINE_FILE), text)
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    fn load(&self, name: &str) -> Result<Profile, ProfileError> {
        load(self.0.path(), name)
    }

    /// Loads `name` expecting an error; returns (line, key, message).
    fn invalid(&self, name: &str) -> (usize, String, String) {
        match self.load(name) {
            Err(ProfileError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }
}

const MINIMAL: &str = "[cores]\nhousekeeping = \"0\"\nsip = \"1\"\n";

const SIM_PANEL: &str = r#"
[panel.button]
backend = "sim"
[panel.leds.online]
backend = "sim"
[panel.leds.draining]
backend = "sim"
[panel.leds.offline]
backend = "sim"
"#;

fn repo_boards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board")
}

#[test]
fn the_shipped_boards_load() {
    let qemu = load(&repo_boards(), "qemu").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(qemu.cores.sip, CoreSpec::List(CpuList::from_iter([2])));
    assert_eq!(qemu.console.as_ref().map(|c| c.baud), Some(115_200));
    assert!(qemu
        .kernel
        .cmdline
        .as_deref()
        .is_some_and(|c| c.contains("isolcpus=managed_irq,domain,2 ")));
    let qemu_panel = qemu.panel.unwrap_or_else(|| panic!("qemu has a panel"));
    assert!(matches!(
        qemu_panel.button,
        ButtonSpec::Evdev(EvdevKeySpec { grab: false, .. })
    ));

    let apu2 = load(&repo_boards(), "apu2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(apu2.cores.sip.to_string(), "1-3");
    assert_eq!(
        apu2.watchdog.as_ref().and_then(|w| w.module.as_deref()),
        Some("sp5100_tco")
    );
    let leds = apu2.panel.map(|p| p.leds);
    assert_eq!(
        leds.map(|l| l.offline),
        Some(LedSpec::Class {
            name: "apu*:green:3".into()
        })
    );

    let sim = load(&repo_boards(), "sim").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.cores.housekeeping, CoreSpec::Host);
    assert!(sim.description.contains("simulat"));
    assert_eq!(sim.panel.map(|p| p.button), Some(ButtonSpec::Sim));
    assert_eq!(sim.watchdog, None);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let b = Boards::new();
    b.add("x", &format!("{MINIMAL}{SIM_PANEL}"));
    let p = b.load("x").unwrap_or_else(|e| panic!("{e}"));
    let panel = p.panel.unwrap_or_else(|| panic!("panel"));
    assert_eq!(panel.config, panel::PanelConfig::default());
    assert_eq!(panel.poll_ms, 10);
    assert_eq!(p.ports, None);
    assert_eq!(p.kernel, Kernel::default());
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let b = Boards::new();
    b.add(
        "x",
        &format!("{MINIMAL}\n[panel]\nhold_ms = 2000\nhold_time = 3\n"),
    );
    let (line, key, message) = b.invalid("x");
    assert_eq!(line, 7);
    assert_eq!(key, "panel.hold_time");
    assert!(message.contains("unknown field"), "{message}");

    b.add("y", "colour = \"red\"\n");
    let (line, key, _) = b.invalid("y");
    assert_eq!((line, key.as_str()), (1, "colour"));
}

#[test]
fn bad_values_are_named_with_their_line() {
    let b = Boards::new();
    b.add("type", &format!("{MINIMAL}[panel]\nhold_ms = \"long\"\n"));
    assert_eq!(b.invalid("type").0, 5);
    assert_eq!(b.invalid("type").1, "panel.hold_ms");

    b.add("range", &format!("{MINIMAL}[panel]\ndebounce_ms = 5000\n"));
    let (line, key, message) = b.invalid("range");
    assert_eq!((line, key.as_str()), (5, "panel.debounce_ms"));
    assert!(message.contains("outside"), "{message}");

    b.add("cpus", "[cores]\nhousekeeping = \"0\"\nsip = \"1-x\"\n");
    let (line, key, message) = b.invalid("cpus");
    assert_eq!((line, key.as_str()), (3, "cores.sip"));
    assert!(message.contains("1-x"), "{message}");

    b.add(
        "key",
        &format!("{MINIMAL}[panel.button]\nbackend = \"evdev\"\nkey = \"KEY_NOPE\"\n"),
    );
    let (line, key, message) = b.invalid("key");
    assert_eq!((line, key.as_str()), (6, "panel.button.key"));
    assert!(message.contains("KEY_NOPE"), "{message}");

    b.add("baud", "[console]\ndevice = \"ttyS0\"\nbaud = 115201\n");
    assert_eq!(b.invalid("baud").1, "console.baud");

    b.add(
        "backend",
        &format!("{MINIMAL}[panel.button]\nbackend = \"usb\"\n"),
    );
    let (line, key, _) = b.invalid("backend");
    assert_eq!((line, key.as_str()), (5, "panel.button.backend"));

    b.add(
        "led",
        &format!("{MINIMAL}[panel.leds.online]\nbackend = \"led-class\"\nname = \"../../etc\"\n"),
    );
    assert_eq!(b.invalid("led").1, "panel.leds.online.name");
}

#[test]
fn backend_fields_must_fit_the_backend() {
    let b = Boards::new();
    let button = |body: &str| {
        format!(
            "{MINIMAL}[panel.button]\n{body}\n[panel.leds.online]\nbackend = \"sim\"\n\
             [panel.leds.draining]\nbackend = \"sim\"\n[panel.leds.offline]\nbackend = \"sim\"\n"
        )
    };
    b.add(
        "noline",
        &button("backend = \"gpio\"\nchip = \"gpiochip0\""),
    );
    let (line, key, _) = b.invalid("noline");
    assert_eq!((line, key.as_str()), (4, "panel.button.line"));

    b.add("nochip", &button("backend = \"gpio\"\nline = 5"));
    assert_eq!(b.invalid("nochip").1, "panel.button.chip");

    b.add(
        "stray",
        &button("backend = \"gpio\"\nchip = \"gpiochip0\"\nline = 5\nkey = \"KEY_F12\""),
    );
    let (_, key, message) = b.invalid("stray");
    assert_eq!(key, "panel.button.key");
    assert!(message.contains("does not apply"), "{message}");

    b.add(
        "gpio",
        &button(
            "backend = \"gpio\"\nline = \"FRONT_BUTTON\"\nactive_low = true\nbias = \"pull-up\"",
        ),
    );
    let p = b.load("gpio").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.panel.map(|p| p.button),
        Some(ButtonSpec::Gpio(GpioLineSpec {
            chip: None,
            line: LineRef::Name("FRONT_BUTTON".into()),
            active_low: true,
            bias: Bias::PullUp,
        }))
    );

    b.add(
        "noleds",
        &format!("{MINIMAL}[panel.button]\nbackend = \"sim\"\n"),
    );
    assert!(matches!(
        b.load("noleds"),
        Err(ProfileError::Missing { key, .. }) if key == "panel.leds"
    ));
}

#[test]
fn a_child_overrides_its_parent() {
    let b = Boards::new();
    b.add(
        "base",
        &format!(
            "description = \"base\"\n[cores]\nhousekeeping = \"0\"\nsip = \"1-3\"\n\
             [console]\ndevice = \"ttyS0\"\n[panel]\nhold_ms = 3000\n{SIM_PANEL}"
        ),
    );
    b.add(
        "rev-b",
        "inherit = \"base\"\ndescription = \"rev b\"\n[console]\nbaud = 57600\n\
         [panel]\ndebounce_ms = 30\n[panel.button]\nbackend = \"evdev\"\nkey = \"KEY_PROG1\"\n",
    );
    let p = b.load("rev-b").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.inherits, vec!["base".to_owned()]);
    assert_eq!(p.description, "rev b");
    assert_eq!(
        p.console,
        Some(Console {
            device: "ttyS0".into(),
            baud: 57600
        })
    );
    assert_eq!(p.cores.sip.to_string(), "1-3");
    let panel = p.panel.unwrap_or_else(|| panic!("panel"));
    assert_eq!(panel.config.hold_ms, 3000, "inherited");
    assert_eq!(panel.config.debounce_ms, 30, "overridden");
    assert!(
        matches!(panel.button, ButtonSpec::Evdev(_)),
        "replaced whole"
    );
    assert_eq!(panel.leds.online, LedSpec::Sim, "inherited");
}

#[test]
fn an_error_in_a_parent_names_the_parent() {
    let b = Boards::new();
    b.add("base", "[cores]\nhousekeeping = \"0\"\nsip = \"0-1\"\n");
    b.add("child", "inherit = \"base\"\n");
    match b.load("child") {
        Err(ProfileError::Invalid {
            path, line, key, ..
        }) => {
            assert!(path.ends_with("base/board.toml"), "{path:?}");
            assert_eq!((line, key.as_str()), (3, "cores.sip"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inherit_loops_and_missing_parents_are_refused() {
    let b = Boards::new();
    b.add("a", "inherit = \"b\"\n")
        .add("b", "inherit = \"a\"\n");
    let err = b.load("a").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("a -> b -> a"), "{err}");

    b.add("orphan", "inherit = \"nobody\"\n");
    assert!(matches!(b.load("orphan"), Err(ProfileError::Read { .. })));

    b.add("sneaky", "inherit = \"../etc\"\n");
    assert_eq!(b.invalid("sneaky").1, "inherit");

    assert!(matches!(b.load("../x"), Err(ProfileError::BadName(_))));
    assert!(matches!(b.load("absent"), Err(ProfileError::Read { .. })));
}

#[test]
fn the_cmdline_file_must_agree_with_cores_and_console() {
    let b = Boards::new();
    let body = "[cores]\nhousekeeping = \"0\"\nsip = \"1-3\"\n[console]\ndevice = \"ttyS0\"\n";
    b.add("ok", body).add_cmdline(
        "ok",
        "# comment\nconsole=ttyS0,115200n8\nisolcpus=managed_irq,domain,1-3 # flags first\n\
         nohz_full=1-3\nrcu_nocbs=1,2,3\n",
    );
    let p = b.load("ok").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.kernel.cmdline.as_deref(),
        Some(
            "console=ttyS0,115200n8 isolcpus=managed_irq,domain,1-3 nohz_full=1-3 rcu_nocbs=1,2,3"
        )
    );

    b.add("drift", body).add_cmdline(
        "drift",
        "console=ttyS0,115200 isolcpus=1-2 nohz_full=1-3 rcu_nocbs=1-3\n",
    );
    let (_, key, message) = b.invalid("drift");
    assert_eq!(key, "kernel.cmdline");
    assert!(message.contains("isolcpus=1-2"), "{message}");

    b.add("noiso", body)
        .add_cmdline("noiso", "console=ttyS0,115200\n");
    assert!(b.invalid("noiso").2.contains("isolcpus"));

    b.add("console", body).add_cmdline(
        "console",
        "console=tty0 isolcpus=1-3 nohz_full=1-3 rcu_nocbs=1-3\n",
    );
    assert!(b.invalid("console").2.contains("console=ttyS0,115200"));

    b.add("both", &format!("{body}[kernel]\ncmdline = \"quiet\"\n"))
        .add_cmdline("both", "quiet\n");
    let (line, key, _) = b.invalid("both");
    assert_eq!((line, key.as_str()), (7, "kernel.cmdline"));
}

#[test]
fn host_cores_resolve_to_what_is_available() {
    let available: CpuList = "0-3".parse().unwrap_or_else(|e| panic!("{e}"));
    let host = Cores {
        housekeeping: CoreSpec::Host,
        sip: CoreSpec::Host,
    };
    let r = host.resolve(&available).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.sip, available);

    let apu2 = Cores {
        housekeeping: CoreSpec::List(CpuList::from_iter([0])),
        sip: CoreSpec::List(CpuList::from_iter([1, 2, 3])),
    };
    assert!(apu2.resolve(&available).is_ok());
    let two: CpuList = "0-1".parse().unwrap_or_else(|e| panic!("{e}"));
    let err = apu2.resolve(&two).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("cores.sip = 1-3 but only cpus 0-1 are available")
    );
}

#[test]
fn key_at_finds_table_and_key() {
    let src = "a = 1\n[panel.button]\nbackend = \"x\"\n\n[[listen]]\naddr = 2\n";
    assert_eq!(key_at(src, 0), "a");
    assert_eq!(
        key_at(src, src.find("backend").unwrap_or(0) + 3),
        "panel.button.backend"
    );
    assert_eq!(key_at(src, src.find("[panel").unwrap_or(0)), "panel.button");
    assert_eq!(key_at(src, src.find("addr").unwrap_or(0)), "listen.addr");
}
