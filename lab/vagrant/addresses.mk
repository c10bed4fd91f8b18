# The Vagrant lab's private network (host-only, isolated: only the lab's own two VMs are on
# it). One definition, read by lab/lab.mk and by the Vagrantfile.
LAB_PROBER_ADDR = 192.168.56.10
LAB_PEER_ADDR = 192.168.56.11
