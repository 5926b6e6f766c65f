"""The reference guest's boot script and configuration files, rendered as text (pure).

Boot path: SeaBIOS -> SYSLINUX (FAT partition 1) -> kernel + a small initramfs (busybox, /etc, the modules
that mount the root) whose ``/init`` (:func:`render_init`) mounts the erofs image of ``/usr`` (partition 2:
Python, alsa-utils, libraries, the other modules, the selftest) through a read-only loop device, loads the
device drivers, runs the selftest as its child and powers off.  The initramfs stays the root file system,
so /etc, /tmp and /run are writable without further mounts and busybox is the same binary throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

GUEST_DIR = "usr/lib/aero-selftest"  # in the erofs image, like everything under /usr
BAKED_ARGS = "etc/aero-selftest/args"  # a link into GUEST_DIR: the guest layer's baked args
CONSOLE_TTY = "/dev/tty1"  # the VGA text console (vgacon) a screenshot shows
EXIT_WATCHDOG = 3  # aero_selftest.main.EXIT_WATCHDOG: RESULT was written by the selftest's watchdog
USR_LOOP = "/dev/loop0"  # explicit: busybox's ``mount -o loop`` mounts a block device without a loop device
DRIVERS = "/run/aero-drivers"  # the driver loader writes <this>.log (its errors) and <this>.done (finished)
DRIVERS_SCRIPT = "etc/aero-drivers"

# Kernel command line.  The boot parameters after the first four save time under TCG and change nothing a
# virtio driver does (QEMU 10, TCG, 2026-12: kernel time to /init ~2.8 s -> ~1.8 s together; the notes
# below say what each buys, measured in paired runs with a noise of about +-0.1 s):
#  - console=tty0 console=ttyS0: kernel errors on the VGA screen too; the last one is /dev/console.
#  - quiet: every console line costs ~1 ms per 30 characters on the emulated UART.
#  - edd=off: no BIOS disk probing in the kernel's real-mode setup.
#  - nokaslr: the decompressor need not relocate the kernel.
#  - mitigations=off, lsm=capability, audit=0: no speculation workarounds, no LSMs (AppArmor, IMA/EVM,
#    landlock, ...) to initialise in a throwaway test VM.
#  - init_on_alloc=0: Debian zeroes every allocated page by default, a memset the emulator pays for.
#  - rodata=off: no write-protecting of kernel data and no W+X page-table walk (~0.15 s).
#  - ipv6.disable=1, 8250.nr_uarts=1, no_timer_check: no IPv6 stack (the guest's network is IPv4), one
#    UART to register instead of four, no wait for timer interrupts to prove the IO-APIC routing.
#  - noapictimer: the HPET drives the clock instead of the local APIC timer, whose calibration spins for
#    25 ticks of the reference timer (~0.1 s; under KVM the hypervisor tells its rate, under TCG nothing does).
#  - cryptomgr.notests + initcall_blacklist: the crypto self-tests, the jitter-entropy RNG warm-up, the
#    builtin X.509 key list (the image's modules are unsigned anyway), trace enum maps, encrypted keys,
#    IMA, digital signatures and hibernation snapshots (~0.4 s together); perf, BPF, tracefs, machine-check
#    and builtin-module-parameter sysfs files nothing reads (~0.06 s).
BOOT_PARAMS = (
    "console=tty0",
    "console=ttyS0",
    "panic=-1",
    "quiet",
    "edd=off",
    "nokaslr",
    "mitigations=off",
    "lsm=capability",
    "audit=0",
    "init_on_alloc=0",
    "rodata=off",
    "ipv6.disable=1",
    "8250.nr_uarts=1",
    "no_timer_check",
    "noapictimer",
    "cryptomgr.notests",
    "initcall_blacklist="
    + ",".join(
        (
            "crypto_kdf108_init",
            "jent_mod_init",
            "load_system_certificate_list",
            "trace_eval_init",
            "init_encrypted",
            "init_ima",
            "digsig_init",
            "snapshot_device_init",
            "perf_event_sysfs_init",
            "bpf_crypto_skcipher_init",
            "bpf_tcp_ca_kfunc_init",
            "bpf_dummy_struct_ops_init",
            "tracer_init_tracefs",
            "mcheck_init_device",
            "param_sysfs_builtin_init",
        )
    ),
)
DEFAULT_APPEND = " ".join(BOOT_PARAMS)


UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script (aero reference guest): configure the interface, default route and resolver.
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
  ip -4 addr flush dev "$interface"
  ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
  for r in $router; do ip -4 route add default via "$r" dev "$interface"; break; done
  : > /etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
  ;;
esac
exit 0
"""


ETC_FILES = {
    "etc/fstab": "devtmpfs /dev devtmpfs defaults 0 0\nproc /proc proc defaults 0 0\nsysfs /sys sysfs defaults 0 0\n",
    "etc/hostname": "aero-ref\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\naudio:x:29:\n",
    "etc/hosts": "127.0.0.1 localhost aero-ref\n",
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
}


def _insmods(paths: Sequence[str]) -> str:
    return "".join(f"insmod /{p} || echo 'aero-init: insmod {p} failed'\n" for p in paths)


def render_drivers(groups: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The device-driver loader /init starts in the background (niced, so it does not slow the selftest's
    start) while the selftest starts; the selftest waits for ``<DRIVERS>.done`` before its device checks.

    ``groups`` are (virtio device id, module paths): a group loads only if such a device is there (an
    empty id: always), as udev would load them by modalias; a VM without a sound device loads no sound stack.
    """
    out = [
        "#!/bin/busybox sh",
        "# aero-virtio reference guest: device drivers (generated by pytest_aero_virtio.refenv; do not edit)",
        "renice -n 19 -p $$ >/dev/null",
        'present() { grep -qx "$1" /sys/bus/virtio/devices/*/device 2>/dev/null; }',
    ]
    for device, paths in groups:
        if not paths:
            continue
        lines = _insmods(paths).splitlines()
        out += [f"if present {device}; then", *(f"  {line}" for line in lines), "fi"] if device else lines
    out += ["ip link set lo up", f": >{DRIVERS}.done"]
    return "\n".join(out) + "\n"


def render_init(root_modules: Sequence[str], boot_modules: Sequence[str], guest_dir: str = GUEST_DIR) -> str:
    """The guest's /init (busybox sh, PID 1): mount /usr, start the drivers, run the selftest, power off.

    /usr is partition 2 of the first virtio disk that has one holding an erofs with Python: SYSLINUX gives
    the kernel no way to say which disk it booted from.  It is read through a read-only loop device rather
    than from the partition itself so that the selftest's driver-reset check can move it into RAM first.
    The selftest is imported with ``-c`` rather than run with ``-m``: runpy and what it imports cost ~35 ms
    before START.

    ``boot_modules`` load before the selftest starts (fw_cfg: its args); the device drivers load in the
    background (:func:`render_drivers`).  The console log level drops to 1 before them, so that no driver
    chatter lands inside marker lines; ``stty -opost`` so markers end in a bare LF whatever the selftest
    does; the selftest writes straight to the serial port (its exit status says whether it wrote RESULT; if
    not, /init writes one), and the UART is drained (``stty`` = TCSADRAIN) before ``poweroff -f`` so the
    last line is not cut off and QEMU exits by itself.  Every command before the selftest is a fork the
    emulator pays for, so there are few.  Progress also goes to the VGA text console, for screenshots.
    """
    say = f"echo 'aero-init: {{}}' >{CONSOLE_TTY} 2>/dev/null"
    crashed = "AERO_VIRTIO_SELFTEST|RESULT|FAIL|reason=selftest_crashed"
    return f"""#!/bin/busybox sh
# aero-virtio reference guest /init (generated by pytest_aero_virtio.refenv; do not edit)
export PATH=/bin:/usr/bin
mount -a
{_insmods(root_modules)}for part in /dev/vd[a-z]2; do
  [ -b "$part" ] && losetup -r {USR_LOOP} "$part" || continue
  mount -t erofs -o ro {USR_LOOP} /usr && [ -x /usr/bin/python3 ] && break
  umount /usr 2>/dev/null
  losetup -d {USR_LOOP}
done
if [ ! -x /usr/bin/python3 ]; then
  {say.format("no /usr image (erofs on partition 2 of a virtio disk); is the reference disk attached?")}
  echo 'aero-init: no /usr image (erofs on partition 2 of a virtio disk); is the reference disk attached?'
  poweroff -f
fi
{_insmods(boot_modules)}echo 1 >/proc/sys/kernel/printk
{say.format("/usr mounted, loading drivers, starting the selftest")}
sh /{DRIVERS_SCRIPT} >{DRIVERS}.log 2>&1 &
stty -F /dev/ttyS0 -opost
export HOME=/root TERM=dumb LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
export PYTHONPATH=/{guest_dir} AERO_SELFTEST_CONSOLE={CONSOLE_TTY} AERO_SELFTEST_DRIVERS={DRIVERS}
cd /
python3 -S -c 'import aero_selftest.__main__' </dev/null >/dev/ttyS0 2>&1
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != {EXIT_WATCHDOG} ]; then
  echo '{crashed}' >/dev/ttyS0
  echo '{crashed}' >{CONSOLE_TTY} 2>/dev/null
fi
{say.format("selftest finished, powering off")}
sync
stty -F /dev/ttyS0 -opost
sleep 0.1
poweroff -f
"""


def render_syslinux_cfg(append: str) -> str:
    """SYSLINUX config: boot at once (no prompt, no timeout) with the image's fixed command line."""
    return f"DEFAULT aero\nPROMPT 0\nTIMEOUT 0\nLABEL aero\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {append}\n"
