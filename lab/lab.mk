# The labs: a QEMU guest for the kprobe path (offline, used by CI) and a two-VM Vagrant lab.
LAB_QEMU_RUN := lab/qemu/run.sh
PEER_ADDR := 192.168.56.11

.PHONY: lab-qemu lab-qemu-image lab lab-validate

lab-qemu-image:
	$(SUDO) lab/qemu/build-image.sh

# the project's kernel tests and `netprobe prove` inside Debian's 6.1 kernel (kprobes, e1000)
lab-qemu:
	$(SUDO) $(LAB_QEMU_RUN) --timeout 2400 -- bash lab/qemu/in-guest.sh

lab:
	vagrant up
	vagrant ssh prober -c 'sudo netprobe prove --peer $(PEER_ADDR)'

lab-validate:
	@command -v vagrant >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null
	@command -v shellcheck >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
	vagrant validate --ignore-provider
	shellcheck lab/qemu/*.sh lab/vagrant/*.sh scripts/*.sh .ci/run
