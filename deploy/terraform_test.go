package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const terraformDir = "terraform"

// terraform is not a Debian package, so deps.sh cannot install it; where it
// is missing the Terraform checks are skipped with that reason.
func terraformPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("terraform is not installed (it is not a Debian package; put the release binary on PATH, e.g. /usr/local/bin/terraform): Terraform checks skipped")
	}
	return path
}

// terraformEnv keeps terraform from reading the user's CLI configuration
// or phoning home.
func terraformEnv(t *testing.T, cliConfig string) []string {
	if cliConfig == "" {
		cliConfig = filepath.Join(t.TempDir(), "terraformrc")
		if err := os.WriteFile(cliConfig, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"TF_CLI_CONFIG_FILE=" + cliConfig, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1", "TF_INPUT=0"}
}

func TestTerraformFormatted(t *testing.T) {
	tf := terraformPath(t)
	cmd := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", ".")
	cmd.Dir = terraformDir
	cmd.Env = append(os.Environ(), terraformEnv(t, "")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("terraform fmt -check -recursive: %v: run `terraform fmt -recursive deploy/terraform`\n%s", err, out)
	}
}

// providerMirror finds a local copy of the hashicorp/aws provider: the
// plugin cache or one of terraform's implied filesystem mirror directories.
func providerMirror() (string, bool) {
	home, _ := os.UserHomeDir()
	candidates := []string{
		os.Getenv("TF_PLUGIN_CACHE_DIR"),
		filepath.Join(home, ".terraform.d", "plugins"),
		filepath.Join(home, ".local", "share", "terraform", "plugins"),
		"/usr/local/share/terraform/plugins",
		"/usr/share/terraform/plugins",
	}
	for _, dir := range candidates {
		if dir == "" {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(dir, "registry.terraform.io", "hashicorp", "aws", "*", "*"))
		if len(matches) > 0 {
			return dir, true
		}
	}
	return "", false
}

// terraform validate needs the AWS provider, and this machine has no route
// to the registry; validate runs when a provider is cached locally, and
// otherwise the test says so.
func TestTerraformValidate(t *testing.T) {
	tf := terraformPath(t)
	mirror, ok := providerMirror()
	if !ok {
		t.Log("terraform validate SKIPPED: no hashicorp/aws provider cached locally (TF_PLUGIN_CACHE_DIR, ~/.terraform.d/plugins, " +
			"/usr/share/terraform/plugins) and registry.terraform.io is not reachable, so `terraform init` cannot install it. " +
			"terraform fmt still ran. To validate, run `terraform providers mirror DIR` on a connected machine and set TF_PLUGIN_CACHE_DIR=DIR.")
		return
	}
	t.Logf("validating with the provider from %s", mirror)
	cliConfig := filepath.Join(t.TempDir(), "terraformrc")
	conf := fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path = %q\n  }\n}\n", mirror)
	if err := os.WriteFile(cliConfig, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := terraformEnv(t, cliConfig)
	// Work on a copy: init writes .terraform/ and a lock file, and the
	// module reads ../systemd.
	work := t.TempDir()
	if err := os.CopyFS(work, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"terraform", "terraform/examples/basic"} {
		d := filepath.Join(work, dir)
		run(t, d, env, tf, "init", "-backend=false", "-input=false")
		out := run(t, d, env, tf, "validate", "-no-color")
		t.Logf("terraform validate %s: %s", dir, strings.TrimSpace(out))
	}
}

// The module's user data embeds the unit and the helper from deploy/systemd
// and installs them where the unit expects them: those paths must agree.
func TestTerraformInstallsWhatTheUnitRuns(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(terraformDir, "user_data.tf"))
	if err != nil {
		t.Fatal(err)
	}
	userData := string(b)
	for _, m := range regexp.MustCompile(`file\("\$\{path\.module\}/([^"]+)"\)`).FindAllStringSubmatch(userData, -1) {
		if _, err := os.Stat(filepath.Join(terraformDir, m[1])); err != nil {
			t.Errorf("user_data.tf reads %s, which does not exist: %v", m[1], err)
		}
	}
	for _, want := range []string{
		`path = "/etc/systemd/system/replicator.service"`,
		`path = "` + installedHelper + `"`,
		`install -m 0755 /root/replicator.download ` + installedBinary,
		`path = "/etc/replicator/replicator.yaml"`,
		`path = "/etc/replicator/replicator.env"`,
	} {
		if !strings.Contains(userData, want) {
			t.Errorf("user_data.tf does not contain %s, which the unit relies on", want)
		}
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--config /etc/replicator/replicator.yaml", "EnvironmentFile=-/etc/replicator/replicator.env"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("%s does not contain %s, which the user data writes", unitFile, want)
		}
	}
}

// userDataStub stands in for the AWS lookups of main.tf, so that the user
// data renders offline from variables.tf, locals.tf and user_data.tf.
const userDataStub = `
locals {
  region = "eu-west-1"
}

output "user_data" {
  value = local.user_data
}
`

// renderUserData renders the module's cloud-init for the given module
// arguments (HCL) with terraform, without the AWS provider. It returns the
// user data, or the error terraform printed.
func renderUserData(t *testing.T, tf, args string) (string, error) {
	t.Helper()
	work := t.TempDir()
	mod := filepath.Join(work, "terraform")
	for _, dir := range []string{mod, filepath.Join(work, "systemd"), filepath.Join(work, "root")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"variables.tf", "locals.tf", "user_data.tf"} {
		copyFile(filepath.Join(terraformDir, f), filepath.Join(mod, f))
	}
	entries, err := os.ReadDir("systemd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(filepath.Join("systemd", e.Name()), filepath.Join(work, "systemd", e.Name()))
	}
	if err := os.WriteFile(filepath.Join(mod, "stub.tf"), []byte(userDataStub), 0o644); err != nil {
		t.Fatal(err)
	}
	root := fmt.Sprintf("module \"m\" {\n  source = \"../terraform\"\n%s\n}\n\noutput \"user_data\" {\n  value = module.m.user_data\n}\n", args)
	if err := os.WriteFile(filepath.Join(work, "root", "main.tf"), []byte(root), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), terraformEnv(t, "")...)
	dir := filepath.Join(work, "root")
	for _, args := range [][]string{
		{"init", "-backend=false", "-input=false", "-no-color"},
		{"apply", "-auto-approve", "-input=false", "-no-color"},
	} {
		cmd := exec.Command(tf, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("terraform %s: %w\n%s", args[0], err, out)
		}
	}
	cmd := exec.Command(tf, "output", "-raw", "user_data")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("terraform output: %v", err)
	}
	return string(out), nil
}

type cloudConfig struct {
	Packages   []string `yaml:"packages"`
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Permissions string `yaml:"permissions"`
		Content     string `yaml:"content"`
	} `yaml:"write_files"`
	Runcmd [][]string `yaml:"runcmd"`
}

func parseCloudConfig(t *testing.T, userData string) (cloudConfig, map[string]string) {
	t.Helper()
	body, ok := strings.CutPrefix(userData, "#cloud-config\n")
	if !ok {
		t.Fatalf("user data does not start with #cloud-config:\n%.200s", userData)
	}
	var cc cloudConfig
	if err := yaml.Unmarshal([]byte(body), &cc); err != nil {
		t.Fatalf("user data is not valid YAML: %v", err)
	}
	files := map[string]string{}
	for _, f := range cc.WriteFiles {
		files[f.Path] = f.Content
		if f.Permissions == "" {
			t.Errorf("user data writes %s without permissions", f.Path)
		}
	}
	if len(cc.Runcmd) != 1 || len(cc.Runcmd[0]) != 3 || cc.Runcmd[0][0] != "bash" {
		t.Fatalf("user data runcmd is %v, want one bash -c script", cc.Runcmd)
	}
	if out, err := exec.Command("bash", "-n", "-c", cc.Runcmd[0][2]).CombinedOutput(); err != nil {
		t.Errorf("install script is not valid bash: %v\n%s\n%s", err, out, cc.Runcmd[0][2])
	}
	return cc, files
}

const moduleArgsBase = `
  vpc_id                = "vpc-1"
  subnet_id             = "subnet-1"
  rds_security_group_id = "sg-rds"
  binary_sha256         = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
`

// The rendered user data installs the shipped unit and helper unchanged,
// checks the binary's checksum, and writes config that matches the
// variables: metrics on loopback unless Prometheus is let in, the Redis
// service only with an ElastiCache target.
func TestTerraformUserDataRenders(t *testing.T) {
	tf := terraformPath(t)
	unit, _ := os.ReadFile(unitFile)
	redisUnit, _ := os.ReadFile(redisUnitFile)
	helper, _ := os.ReadFile(helperFile)

	t.Run("S3 binary, Redis, Prometheus allowed in", func(t *testing.T) {
		ud, err := renderUserData(t, tf, moduleArgsBase+`
  binary_s3_bucket              = "artifacts"
  binary_s3_key                 = "replicator/linux-amd64/replicator"
  elasticache_security_group_id = "sg-cache"
  metrics_ingress_cidr_blocks   = ["10.0.0.0/16"]
  ssm_prefix                    = "/replicator/prod/"
`)
		if err != nil {
			t.Fatal(err)
		}
		cc, files := parseCloudConfig(t, ud)
		if files["/etc/systemd/system/replicator.service"] != string(unit) ||
			files["/etc/systemd/system/replicator-redis.service"] != string(redisUnit) ||
			files[installedHelper] != string(helper) {
			t.Errorf("user data does not install the units and helper of deploy/systemd unchanged")
		}
		var cfg map[string]string
		if err := yaml.Unmarshal([]byte(files["/etc/replicator/replicator.yaml"]), &cfg); err != nil {
			t.Fatalf("replicator.yaml: %v", err)
		}
		if cfg["metrics-addr"] != "0.0.0.0:9187" || cfg["jobs"] != "4" {
			t.Errorf("replicator.yaml = %v, want metrics-addr 0.0.0.0:9187 and the default jobs 4", cfg)
		}
		env := files["/etc/replicator/replicator.env"]
		for _, want := range []string{"AWS_REGION=eu-west-1\n", "REPLICATOR_SSM_PREFIX=/replicator/prod/\n", "REPLICATOR_REDIS_METRICS_ADDR=0.0.0.0:9188\n"} {
			if !strings.Contains(env, want) {
				t.Errorf("replicator.env lacks %q:\n%s", want, env)
			}
		}
		script := cc.Runcmd[0][2]
		for _, want := range []string{
			"aws s3 cp --only-show-errors 's3://artifacts/replicator/linux-amd64/replicator'",
			"sha256sum --check --strict",
			"-o /etc/replicator/rds-global-bundle.pem 'https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem'",
			"systemctl enable --now replicator.service replicator-redis.service",
		} {
			if !strings.Contains(script, want) {
				t.Errorf("install script lacks %q:\n%s", want, script)
			}
		}
	})

	t.Run("URL binary, Postgres only, metrics on loopback", func(t *testing.T) {
		ud, err := renderUserData(t, tf, moduleArgsBase+`
  binary_url = "https://example.com/replicator"
`)
		if err != nil {
			t.Fatal(err)
		}
		cc, files := parseCloudConfig(t, ud)
		if _, found := files["/etc/systemd/system/replicator-redis.service"]; found {
			t.Errorf("Redis unit installed without an ElastiCache target")
		}
		if !strings.Contains(files["/etc/replicator/replicator.yaml"], `"metrics-addr": "127.0.0.1:9187"`) {
			t.Errorf("metrics not on loopback without a Prometheus ingress:\n%s", files["/etc/replicator/replicator.yaml"])
		}
		script := cc.Runcmd[0][2]
		if !strings.Contains(script, "curl -fsSL --retry 5 -o /root/replicator.download 'https://example.com/replicator'") ||
			!strings.Contains(script, "systemctl enable --now replicator.service\n") {
			t.Errorf("install script:\n%s", script)
		}
	})

	for _, tc := range []struct{ name, args, want string }{
		{"relative SSM prefix", `binary_url = "https://x/r"` + "\n" + `ssm_prefix = "replicator"`, "ssm_prefix must start and end with '/'"},
		{"secret in config", `binary_url = "https://x/r"` + "\n" + `replicator_config = { source = "postgres://u:p@h/db" }`, "must not hold connection strings"},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			_, err := renderUserData(t, tf, moduleArgsBase+tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error saying %q, got %v", tc.want, err)
			}
		})
	}
}
