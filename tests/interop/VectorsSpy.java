// Placement vectors from spymemcached (Debian's libspymemcached-java) with
// KetamaConnectionFactory: the server each key maps to, as the client's
// KetamaNodeLocator chooses it. Usage: java -cp spymemcached.jar:.
// VectorsSpy SERVERS [DOWN] < keys, one key a line; prints one server index
// (into SERVERS) a line. DOWN: index of a server that is not active: then
// the key goes where MemcachedConnection.addOperation puts it under the
// factory's FailureMode.Redistribute: the primary if active, else the first
// active node of locator.getSequence(key), else the primary (that rule is
// restated here; the locator and its iterator are the library's). A key
// printed with DOWN's own index is one this client cannot reach while DOWN
// is out; k2mc writes it to another server (placement.c, next_in).
// The client connects in the background; a server that is not there only
// costs log lines (silenced), never a different placement.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.Iterator;
import java.util.List;
import net.spy.memcached.AddrUtil;
import net.spy.memcached.KetamaConnectionFactory;
import net.spy.memcached.MemcachedClient;
import net.spy.memcached.MemcachedNode;
import net.spy.memcached.NodeLocator;

public class VectorsSpy {
	public static void main(String[] args) throws Exception {
		System.setProperty("net.spy.log.LoggerImpl", "net.spy.memcached.compat.log.SunLogger");
		java.util.logging.Logger.getLogger("net.spy.memcached").setLevel(java.util.logging.Level.OFF);
		List<InetSocketAddress> addrs = AddrUtil.getAddresses(args[0].replace(',', ' '));
		int down = args.length > 1 ? Integer.parseInt(args[1]) : -1;
		SocketAddress downAddr = down >= 0 ? addrs.get(down) : null;
		MemcachedClient c = new MemcachedClient(new KetamaConnectionFactory(), addrs);
		NodeLocator loc = c.getNodeLocator();
		BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
		String key;
		while ((key = in.readLine()) != null) {
			MemcachedNode n = loc.getPrimary(key);
			if (n.getSocketAddress().equals(downAddr)) {
				MemcachedNode placed = null;
				for (Iterator<MemcachedNode> i = loc.getSequence(key); placed == null && i.hasNext();) {
					MemcachedNode m = i.next();
					if (!m.getSocketAddress().equals(downAddr))
						placed = m;
				}
				if (placed != null)
					n = placed;
			}
			System.out.println(addrs.indexOf(n.getSocketAddress()));
		}
		c.shutdown();
	}
}
