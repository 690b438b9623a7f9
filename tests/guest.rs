// SPDX-License-Identifier: GPL-2.0-or-later
//! A real guest on the product build (tests/guest/: Debian's kernel, a
//! busybox init on ttyS0), under every accelerator there is (KVM where
//! /dev/kvm opens, TCG always): dynamic monitors see the events only a
//! guest makes, monitors come and go while it boots and hot-unplugs a
//! device, and the guest notices nothing.  Needs QMH_GUEST_DIR (`make
//! check` sets it on the product build; the lab builds skip `guest_`).

mod common;

use std::time::Duration;

use common::{accels, Guest, Qmp, GUEST_LIMIT};
use serde_json::json;

/// A device only the guest can let go of: device_del of it on `pc`
/// asks the guest's ACPI hotplug driver, and DEVICE_DELETED comes once
/// the guest ejected it.
const HOTPLUG: &str = "virtio-rng-pci";
const VIRTIO_VENDOR: &str = "0x1af4:";

fn virtio_count(pci: &[String]) -> usize {
    pci.iter().filter(|d| d.starts_with(VIRTIO_VENDOR)).count()
}

/// Waits on `mon` for the DEVICE_DELETED of device `id` (its virtio
/// backend's event comes first) and asserts the device's QOM path.
fn wait_device_deleted(mon: &mut Qmp, id: &str, who: &str) {
    let ev = loop {
        let ev = mon.wait_event("DEVICE_DELETED", GUEST_LIMIT);
        if ev["data"]["device"] == id {
            break ev;
        }
    };
    assert_eq!(
        ev["data"]["path"],
        format!("/machine/peripheral/{id}"),
        "{who}"
    );
}

/// A dynamic monitor (on a socket chardev of its own) and its client.
fn dynamic(guest: &mut Guest, id: &str) -> Qmp {
    guest.qemu.dynamic_client(id, &[])
}

#[test]
fn guest_events_reach_dynamic_monitors() {
    for accel in accels() {
        let mut g = Guest::boot(&accel, &[]);
        let mut a = dynamic(&mut g, "a");
        let mut b = dynamic(&mut g, "b");

        // a reboot the guest asks for: RESET on every monitor
        g.console.send("reboot");
        for (name, mon) in [("a", &mut a), ("b", &mut b)] {
            let ev = mon.wait_event("RESET", GUEST_LIMIT);
            assert_eq!(
                ev["data"],
                json!({"guest": true, "reason": "guest-reset"}),
                "{name}"
            );
        }
        let first = g.boot_id.clone();
        g.wait_ready();
        assert_ne!(g.boot_id, first, "{accel}: the guest did not reboot");

        // hot-plug from one dynamic monitor, unplug acknowledged by the
        // guest: DEVICE_DELETED on both
        let before = virtio_count(&g.pci());
        a.ok("device_add", json!({"driver": HOTPLUG, "id": "rng0"}));
        g.wait_pci("the hot-plugged device", |p| virtio_count(p) == before + 1);
        a.ok("device_del", json!({"id": "rng0"}));
        for (name, mon) in [("a", &mut a), ("b", &mut b)] {
            wait_device_deleted(mon, "rng0", name);
        }
        g.wait_pci("the unplug in the guest", |p| virtio_count(p) == before);
        g.echo("after-unplug");

        // the guest powers itself off: SHUTDOWN on every monitor, then
        // QEMU exits by itself
        g.console.send("poweroff");
        for (name, mon) in [("a", &mut a), ("b", &mut b)] {
            let ev = mon.wait_event("SHUTDOWN", GUEST_LIMIT);
            assert_eq!(
                ev["data"],
                json!({"guest": true, "reason": "guest-shutdown"}),
                "{name}"
            );
        }
        let status = common::wait_timeout(&mut g.qemu.child, GUEST_LIMIT);
        assert!(status.success(), "{accel}: {status}");
    }
}

#[test]
fn guest_unaware_of_monitors_removed_mid_boot_and_mid_hotplug() {
    for accel in accels() {
        // the monitors churn while the kernel boots
        let mut g = Guest::start(
            &accel,
            "socket,id=ser0,path=@DIR@/ser0.sock,server=on,wait=off",
            &[],
        );
        for i in 0..20 {
            let id = format!("boot{i}");
            let mut c = dynamic(&mut g, &id);
            assert_eq!(c.ok("query-status", json!({}))["status"], "running");
            g.qemu.monitor_remove(&id);
            // The guest's events before the removal may still come.
            c.expect_eof_after(&g.qemu.mgr.events);
        }
        g.wait_ready();
        g.echo("booted");

        // the monitor that hot-plugged the device is removed before the
        // guest sees it, the one that unplugs it before the guest acked
        let before = virtio_count(&g.pci());
        let mut plug = dynamic(&mut g, "plug");
        plug.ok("device_add", json!({"driver": HOTPLUG, "id": "rng1"}));
        g.qemu.monitor_remove("plug");
        plug.expect_eof_after(&g.qemu.mgr.events);
        g.wait_pci("the hot-plugged device", |p| virtio_count(p) == before + 1);

        let mut watcher = dynamic(&mut g, "watcher");
        let mut unplug = dynamic(&mut g, "unplug");
        unplug.ok("device_del", json!({"id": "rng1"}));
        g.qemu.monitor_remove("unplug");
        unplug.expect_eof_after(&g.qemu.mgr.events);
        wait_device_deleted(&mut watcher, "rng1", "watcher");
        g.wait_pci("the unplug in the guest", |p| virtio_count(p) == before);

        // no reset, no stop, no lost console line
        g.assert_undisturbed("after-churn");
        for mon in [&watcher.events, &g.qemu.mgr.events] {
            assert!(
                !mon.iter()
                    .any(|e| e["event"] == "RESET" || e["event"] == "STOP"),
                "{accel}: {mon:?}"
            );
        }
        g.qemu.monitor_remove("watcher");
        assert!(g.qemu.quit().success());
    }
}

#[test]
fn guest_console_shares_a_mux_with_a_monitor() {
    for accel in accels() {
        // `-serial mon:unix:...`: the console and an HMP monitor on one
        // mux chardev, "serial0"
        let mut g = Guest::start(&accel, "mon:unix:@DIR@/ser0.sock,server=on,wait=off", &[]);
        g.wait_ready();
        let hmp = g
            .qemu
            .monitors()
            .into_iter()
            .find(|m| m.2 == "serial0")
            .expect("the mux's HMP monitor in query-monitors");
        assert_eq!((hmp.1.as_str(), hmp.3), ("readline", false), "{hmp:?}");

        // The mux has frontends: the HMP monitor (its first), the serial
        // port.  A QMP monitor joins them and takes the focus, as a
        // frontend does when it attaches: its greeting comes out on the
        // console.  C-a c goes round them in attach order.
        g.qemu.monitor_add("joiner", "serial0");
        g.console.line_with(r#"{"QMP": "#, Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.echo("console-again");
        g.console.send_bytes(b"\x01c");
        g.console.send(r#"{"execute": "qmp_capabilities"}"#);
        g.console
            .line_with(r#"{"return": {}}"#, Duration::from_secs(30));
        // The focused monitor goes: the focus passes on, as C-a c would,
        // to the HMP monitor, which answers at once; C-a c then brings
        // the console back
        g.qemu.monitor_remove("joiner");
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.echo("after-joiner");

        // Both spellings join, up to the mux's limit of 4 frontends
        g.qemu.mgr.ok(
            "object-add",
            json!({"qom-type": "monitor-hmp", "id": "h2", "chardev": "serial0"}),
        );
        g.qemu.mgr.ok(
            "object-add",
            json!({"qom-type": "monitor-qmp", "id": "q3", "chardev": "serial0"}),
        );
        let full = "too many uses of multiplexed chardev 'serial0' (maximum is 4)";
        g.qemu.mgr.err(
            "monitor-add",
            json!({"id": "q4", "chardev": "serial0"}),
            full,
        );
        g.qemu.mgr.err(
            "object-add",
            json!({"qom-type": "monitor-qmp", "id": "q4", "chardev": "serial0"}),
            full,
        );
        g.qemu.mgr.err(
            "monitor-remove",
            json!({"id": hmp.0}),
            &format!(
                "Monitor '{}' is an HMP monitor; only QMP monitors can be removed",
                hmp.0
            ),
        );
        g.qemu.mgr.err(
            "object-del",
            json!({"id": "h2"}),
            "Deleting HMP monitors is not supported",
        );
        // q3, focused, goes: the focus wraps round to the first HMP
        // monitor; C-a c brings the console back
        g.qemu.mgr.ok("object-del", json!({"id": "q3"}));
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.echo("after-refusals");
        let on_mux: Vec<String> = g
            .qemu
            .monitors()
            .into_iter()
            .filter(|m| m.2 == "serial0")
            .map(|m| m.0)
            .collect();
        assert_eq!(on_mux, [hmp.0.clone(), "h2".to_owned()]);

        // monitors elsewhere come and go; the console keeps working, and
        // the mux still switches round its frontends (C-a c)
        for i in 0..5 {
            let id = format!("m{i}");
            let _c = dynamic(&mut g, &id);
            g.qemu.monitor_remove(&id);
            g.echo(&format!("cycle-{i}"));
        }
        // (h2 is next after the console, then the first HMP monitor)
        g.console.send_bytes(b"\x01c");
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c\x01c");
        g.assert_undisturbed("after-mux");
        assert!(g.qemu.quit().success());
    }
}

#[test]
fn guest_console_survives_removal_of_a_qmp_monitor_on_its_mux() {
    for accel in accels() {
        // the console and a command-line QMP monitor on one mux
        let mut g = Guest::start(
            &accel,
            "socket,id=ser0,path=@DIR@/ser0.sock,server=on,wait=off,mux=on",
            &["-mon", "chardev=ser0,mode=control,id=muxqmp"],
        );
        g.wait_ready();
        g.echo("before");
        g.qemu.monitor_remove("muxqmp");
        assert!(!g.qemu.ids().contains(&"muxqmp".to_owned()));
        g.assert_undisturbed("after-removal");
        assert!(g.qemu.quit().success());
    }
}

/// The common case of a mux: the guest's console alone on a `mux=on`
/// chardev, and an HMP monitor added next to it at run time, in QEMU
/// 11.1's spelling.  The monitor takes the focus as it attaches; C-a c
/// switches between the two.  With TCG, the gdbstub's monitor (no
/// readline) is an object too.
#[test]
fn guest_console_gets_an_hmp_monitor_beside_it() {
    for accel in accels() {
        let gdb = ["-gdb", "unix:@DIR@/gdb.sock,server=on,wait=off"];
        let mut g = Guest::start(
            &accel,
            "socket,id=ser0,path=@DIR@/ser0.sock,server=on,wait=off,mux=on",
            if accel == "tcg" { &gdb } else { &[] },
        );
        g.wait_ready();
        g.echo("before");
        g.qemu.mgr.ok(
            "object-add",
            json!({"qom-type": "monitor-hmp", "id": "h1", "chardev": "ser0"}),
        );
        g.console.line_with("QEMU ", Duration::from_secs(30));
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.echo("console-again");
        g.console.send_bytes(b"\x01c");
        g.console.send("info status");
        g.console
            .line_with("VM status: running", Duration::from_secs(30));
        g.console.send_bytes(b"\x01c");
        g.qemu.mgr.err(
            "object-del",
            json!({"id": "h1"}),
            "Deleting HMP monitors is not supported",
        );
        let hmp: Vec<(String, bool)> = g
            .qemu
            .monitors()
            .into_iter()
            .filter(|m| m.1 == "readline")
            .map(|m| (m.2, m.3))
            .collect();
        let get = |g: &mut Guest, id: &str, prop: &str| {
            g.qemu.mgr.ok(
                "qom-get",
                json!({"path": format!("/objects/{id}"), "property": prop}),
            )
        };
        assert_eq!(get(&mut g, "h1", "readline"), json!(true));
        if accel == "tcg" {
            // the gdbstub's monitor, on an internal chardev
            let gdbstub = g
                .qemu
                .monitors()
                .into_iter()
                .find(|m| m.2.starts_with('#'))
                .expect("the gdbstub's monitor");
            assert_eq!((gdbstub.1.as_str(), gdbstub.3), ("readline", false));
            assert_eq!(get(&mut g, &gdbstub.0, "readline"), json!(false));
            assert_eq!(get(&mut g, &gdbstub.0, "chardev"), json!(gdbstub.2));
            assert_eq!(hmp, [(gdbstub.2.clone(), false), ("ser0".to_owned(), true)]);
        } else {
            assert_eq!(hmp, [("ser0".to_owned(), true)]);
        }
        g.assert_undisturbed("after-hmp");
        assert!(g.qemu.quit().success());
    }
}
