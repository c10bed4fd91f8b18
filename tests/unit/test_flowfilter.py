import pytest

from netprobe.errors import NetprobeError
from netprobe.model.flowfilter import FlowFilter


def test_no_filter_compiles_nothing():
    assert FlowFilter().cflags() == [] and not FlowFilter().active


def test_port_is_given_in_wire_order():
    # 443 = 0x01BB on the wire reads as 0xBB01 from little-endian memory
    assert FlowFilter(port=443).cflags() == ["-DNP_FILTER_PORT=47873"]


def test_ipv4_and_ipv6_hosts():
    assert FlowFilter(host="127.0.0.1").cflags() == ["-DNP_FILTER_HOST4=16777343U"]
    flags = FlowFilter(host="::1").cflags()
    assert flags[-1] == "-DNP_FILTER_HOST6_3=16777216U" and len(flags) == 4


def test_proto_numbers():
    assert FlowFilter(proto="udp").cflags() == ["-DNP_FILTER_PROTO=17"]
    assert FlowFilter(proto="icmp").describe() == "icmp"


@pytest.mark.parametrize("kw, msg", [
    ({"proto": "sctp"}, "--proto"), ({"port": 0}, "--port"), ({"port": 70000}, "--port"),
    ({"host": "example.com"}, "--host"), ({"proto": "icmp", "port": 1}, "icmp"),
])
def test_bad_input_is_one_clear_error(kw, msg):
    with pytest.raises(NetprobeError, match=msg):
        FlowFilter(**kw)


def test_a_v4_mapped_host_is_the_ipv4_address_it_carries():
    assert FlowFilter(host="::ffff:127.0.0.1").cflags() == FlowFilter(host="127.0.0.1").cflags()
