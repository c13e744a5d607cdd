package streams.sizer.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;
import java.util.List;

/**
 * The registry's list of settings that can be changed at run time. Apicurio's own
 * build fills it through a Quarkus build extension whose build-time artifact Maven
 * Central does not serve; this local registry needs none of them, so the list is empty
 * and every setting keeps the value it starts with.
 */
@Singleton
public class DynamicConfigProperties {
    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
