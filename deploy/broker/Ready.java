// broker.sh's readiness probe: exits 0 once the broker answers a metadata request
// (Admin.describeCluster) with at least one broker, 1 after the deadline, printing
// the last error. No attempt waits past the deadline (at most 3 s each), so a
// deadline of 0 s is one attempt that fails unless an answer is already there. The broker only handles requests once it has caught up with the
// cluster's metadata and been unfenced, whatever it logs through, on Kafka 3.9 and 4.x.
//   java -cp "<kafka libs>/*:<dir of Ready.class>" Ready <client.properties> <seconds>
import java.io.FileInputStream;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;

public class Ready {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            props.load(in);
        }
        props.put("request.timeout.ms", "2000");
        props.put("default.api.timeout.ms", "3000");
        props.put("reconnect.backoff.max.ms", "250");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        String last = "no answer";
        try (Admin admin = Admin.create(props)) {
            while (true) {
                long left = Math.max(0, Math.min(deadline - System.nanoTime(), TimeUnit.SECONDS.toNanos(3)));
                try {
                    if (!admin.describeCluster().nodes().get(left, TimeUnit.NANOSECONDS).isEmpty()) {
                        System.exit(0);
                    }
                    last = "no broker in the cluster's metadata";
                } catch (ExecutionException e) {
                    last = String.valueOf(e.getCause());
                } catch (java.util.concurrent.TimeoutException e) {
                    last = "no answer within " + TimeUnit.NANOSECONDS.toMillis(left) + " ms";
                }
                if (System.nanoTime() >= deadline) {
                    System.out.println(last);
                    System.exit(1);
                }
                Thread.sleep(200);
            }
        }
    }
}
