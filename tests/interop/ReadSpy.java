// Reads every key of a k2mc-mock --expect file back with spymemcached
// (Debian's libspymemcached-java): a MemcachedClient with
// KetamaConnectionFactory (its locator, MD5 ketama; FailureMode.Redistribute).
// Values k2mc wrote carry flags 0, which the default transcoder returns as
// strings.
// Usage: java -cp spymemcached.jar:DIR ReadSpy SERVERS EXPECT [DOWN]
// DOWN: the index of a server that is not running: the client sees it
// inactive (its connection is refused) and redistributes that server's keys
// along the locator's sequence; once the other servers are connected, every
// key it can reach must be there (the few it sends to the down server anyway
// are counted as unreachable-for-this-client).
// Prints "found=N absent=N missing=N wrong=N"; exit 0 only if all is right.
import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Iterator;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;
import net.spy.memcached.AddrUtil;
import net.spy.memcached.KetamaConnectionFactory;
import net.spy.memcached.MemcachedClient;
import net.spy.memcached.MemcachedNode;
import net.spy.memcached.NodeLocator;

public class ReadSpy {
	public static void main(String[] args) throws Exception {
		System.setProperty("net.spy.log.LoggerImpl", "net.spy.memcached.compat.log.SunLogger");
		Logger.getLogger("net.spy.memcached").setLevel(Level.OFF);
		List<InetSocketAddress> addrs = AddrUtil.getAddresses(args[0].replace(',', ' '));
		int down = args.length > 2 ? Integer.parseInt(args[2]) : -1;
		MemcachedClient c = new MemcachedClient(new KetamaConnectionFactory(), addrs);
		Map<String, String> want = new LinkedHashMap<>();
		try (BufferedReader in = new BufferedReader(
				new InputStreamReader(new FileInputStream(args[1]), "UTF-8"))) {
			String line;
			while ((line = in.readLine()) != null) {
				String[] f = line.split(" ", 3);
				want.put(f[1], f[0].equals("S") ? f[2] : null);
			}
		}
		// every running server connected, the down one seen inactive
		for (long until = System.currentTimeMillis() + 20000;;) {
			int active = 0;
			for (MemcachedNode n : c.getNodeLocator().getAll())
				active += n.isActive() ? 1 : 0;
			if (active == addrs.size() - (down >= 0 ? 1 : 0))
				break;
			if (System.currentTimeMillis() > until)
				throw new RuntimeException("spymemcached: servers not connected in 20 s");
			Thread.sleep(50);
		}
		// Keys this client itself sends to the down server
		// (MemcachedConnection.addOperation: the primary if active, else the
		// first active node of the locator's sequence, else the primary
		// again) are unreachable for it while the server is down: counted,
		// not read (a get there only waits for its timeout).
		NodeLocator loc = c.getNodeLocator();
		List<String> keys = new ArrayList<>();
		int unreachable = 0;
		for (String k : want.keySet()) {
			MemcachedNode n = loc.getPrimary(k);
			if (!n.isActive()) {
				MemcachedNode placed = null;
				for (Iterator<MemcachedNode> i = loc.getSequence(k); placed == null && i.hasNext();) {
					MemcachedNode m = i.next();
					if (m.isActive())
						placed = m;
				}
				n = placed != null ? placed : n;
			}
			if (n.isActive())
				keys.add(k);
			else
				unreachable++;
		}
		Map<String, Object> got = new LinkedHashMap<>();
		for (int i = 0; i < keys.size(); i += 500)
			got.putAll(c.getBulk(keys.subList(i, Math.min(keys.size(), i + 500))));
		int found = 0, absent = 0, missing = 0, wrong = 0;
		for (Map.Entry<String, String> e : want.entrySet()) {
			Object g = got.get(e.getKey());
			if (!keys.contains(e.getKey()) && g == null) {
				continue;
			} else if (e.getValue() == null) {
				if (g == null) absent++; else wrong++;
			} else if (g == null) {
				missing++;
			} else if (e.getValue().equals(g)) {
				found++;
			} else {
				wrong++;
			}
		}
		System.out.printf("spymemcached: found=%d absent=%d missing=%d wrong=%d%s%n", found,
				  absent, missing, wrong,
				  down >= 0 ? " unreachable-for-this-client=" + unreachable : "");
		c.shutdown();
		System.exit(found > 0 && missing == 0 && wrong == 0 ? 0 : 1);
	}
}
