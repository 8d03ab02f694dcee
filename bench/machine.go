package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Machine is the facts a report is read against.
type Machine struct {
	Cores      int       `json:"cores"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	GoVersion  string    `json:"go_version"`
	OS         string    `json:"os"`
	Arch       string    `json:"arch"`
	CPUModel   string    `json:"cpu_model,omitempty"`
	Kernel     string    `json:"kernel,omitempty"`
	DataDirs   []DirFact `json:"data_dirs"`
}

// DirFact describes one data directory's storage.
type DirFact struct {
	Path   string `json:"path"`
	FSType string `json:"fs_type"`
	// Device is the mounted source (from /proc/self/mountinfo); Disk its
	// model and Rotational whether the kernel calls it rotational, when
	// /sys/block says.
	Device     string `json:"device,omitempty"`
	Disk       string `json:"disk,omitempty"`
	Rotational *bool  `json:"rotational,omitempty"`
}

// Facts gathers the machine's facts and those of each data dir ("" or no
// dirs: the temp dir).
func Facts(dirs []string) Machine {
	m := Machine{
		Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH, CPUModel: cpuModel(), Kernel: readTrim("/proc/sys/kernel/osrelease"),
	}
	if len(dirs) == 0 {
		dirs = []string{""}
	}
	for _, d := range dirs {
		if d == "" {
			d = os.TempDir()
		}
		abs, err := filepath.Abs(d)
		if err == nil {
			d = abs
		}
		f := DirFact{Path: d, FSType: fsType(d)}
		f.Device = mountSource(d)
		if dev := blockDevice(f.Device); dev != "" {
			f.Disk = readTrim("/sys/block/" + dev + "/device/model")
			if f.Disk == "" {
				f.Disk = dev
			}
			if r := readTrim("/sys/block/" + dev + "/queue/rotational"); r != "" {
				rot := r == "1"
				f.Rotational = &rot
			}
		}
		m.DataDirs = append(m.DataDirs, f)
	}
	return m
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mountSource is the source of the longest mount point containing dir.
func mountSource(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	best, src := -1, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		if !(dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) || len(mp) <= best {
			continue
		}
		for i, fl := range fields {
			if fl == "-" && i+2 < len(fields) {
				best, src = len(mp), fields[i+2]
			}
		}
	}
	return src
}

// blockDevice maps "/dev/nvme0n1p2" to its whole disk under /sys/block.
func blockDevice(src string) string {
	if !strings.HasPrefix(src, "/dev/") {
		return ""
	}
	name := filepath.Base(src)
	if _, err := os.Stat("/sys/block/" + name); err == nil {
		return name
	}
	// A partition: /sys/class/block/NAME links into its disk's directory.
	if p, err := filepath.EvalSymlinks("/sys/class/block/" + name); err == nil {
		parent := filepath.Base(filepath.Dir(p))
		if _, err := os.Stat("/sys/block/" + parent); err == nil {
			return parent
		}
	}
	return ""
}

func formatHex(v uint64) string { return strconv.FormatUint(v, 16) }
