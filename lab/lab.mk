# The labs (included by the top Makefile, which defines SUDO):
#   make lab-qemu-image   build (once) the QEMU guests: Debian's 6.1 and 6.12 kernels, BCC
#   make lab-qemu-smoke   kprobes on e1000_xmit_frame and loopback_xmit count real traffic
#   make lab-qemu         the kernel tests and `netprobe prove` inside each guest (CI runs it)
# LAB_KERNELS picks the guests, each with its own cached image: make lab-qemu LAB_KERNELS=6.12
#   make lab              the two-VM Vagrant lab: vagrant up, then netprobe prove --peer
#   make lab LAB_BOX=local  the same offline: the project's own box, libvirt in a namespace of
#                         its own, then vagrant destroy (lab/vagrant/local.sh; CI runs it)
#   make lab-interrupt-test  Ctrl-C during `make lab LAB_BOX=local` leaves nothing behind
#   make lab-validate     vagrant validate + shellcheck; needs no box and no provider
# Others run commands in the guest with: $(LAB_QEMU_RUN) [--timeout SECS] -- CMD...
LAB_QEMU_RUN = lab/qemu/run.sh
LAB_KERNELS ?= 6.1 6.12
# guests booted at once by make lab-qemu (lab/qemu/kernels.sh); CI boots its two together
LAB_QEMU_JOBS ?= 1
# e.g. make lab LAB_PROVIDER=libvirt; empty lets Vagrant pick its default provider
LAB_PROVIDER ?=
# local: the offline lab; a box name: that box; empty: debian/bookworm64, or local when this
# machine has no default route (offline)
LAB_BOX ?=
LAB_SHELL_SCRIPTS = $(shell find lab -name '*.sh' | sort) scripts/*.sh .ci/run
include lab/vagrant/addresses.mk

.PHONY: lab-qemu-image lab-qemu-smoke lab-qemu lab lab-interrupt-test lab-validate

# each kernel's image in turn (the builds share a lock and the downloads); a failing build stops
# the target
lab-qemu-image:
	for k in $(LAB_KERNELS); do $(SUDO) env LAB_KERNEL=$$k lab/qemu/build-image.sh || exit 1; done

lab-qemu-smoke:
	status=0; for k in $(LAB_KERNELS); do \
	  $(SUDO) env LAB_KERNEL=$$k $(LAB_QEMU_RUN) --timeout 600 -- python3 lab/qemu/smoke.py || status=1; \
	done; exit $$status

lab-qemu:
	$(SUDO) env LAB_QEMU_JOBS=$(LAB_QEMU_JOBS) lab/qemu/kernels.sh $(LAB_KERNELS)

lab:
	@if [ "$(LAB_BOX)" = local ] || { [ -z "$(LAB_BOX)" ] \
	      && [ -z "$$(ip route show default; ip -6 route show default)" ]; }; then \
	  echo "lab: the local box, offline (lab/vagrant/local.sh)"; \
	  $(SUDO) lab/vagrant/local.sh; \
	else \
	  set -e; \
	  $(if $(LAB_BOX),export LAB_VAGRANT_BOX=$(LAB_BOX);) \
	  vagrant up $(if $(LAB_PROVIDER),--provider=$(LAB_PROVIDER)); \
	  vagrant ssh prober -c 'sudo netprobe prove --peer $(LAB_PEER_ADDR)'; \
	fi

lab-interrupt-test:
	$(SUDO) lab/vagrant/interrupt-test.sh

lab-validate:
	$(SUDO) lab/apt-need.sh vagrant shellcheck
	vagrant validate --ignore-provider
	shellcheck $(LAB_SHELL_SCRIPTS)
